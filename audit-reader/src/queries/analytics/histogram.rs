//! The reader's side of the latency sketch stored in
//! `signal_metrics_summary.latency_histogram` (see the metrics rollup
//! migration): `{"k": count}` where bucket k holds latencies in
//! [1.02^k, 1.02^(k+1)) ms and stands for 1.02^(k+0.5) ms.
//!
//! Merging and quantiles happen here rather than in SQL because a dashboard
//! answer needs three quantiles of every bucket plus the merged range: the
//! SQL functions (`histogram_merge`, `histogram_quantile`) rebuild JSONB per
//! row and cost tens of milliseconds per call; this costs microseconds.
//! Both follow the same rule, so they give the same figures.

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::Jsonb;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Counts by bucket index (bucket k at position k), no trailing zeros. Dense
/// because merging is what every answer does most: a day of minute rows is
/// thousands of histograms of up to a few hundred buckets, and adding two
/// slices is much cheaper than inserting into a map per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromSqlRow)]
#[diesel(sql_type = Jsonb)]
pub struct LatencyHistogram(Vec<i64>);

/// The largest bucket index kept: 1.02^4096 ms is far beyond any latency a
/// BIGINT of microseconds can hold (the rollup writes at most ~1,850), so
/// a larger key is not a bucket and is ignored like any other non-bucket key.
const MAX_BUCKET: usize = 4096;

/// Microseconds a bucket stands for: the geometric middle of its bounds.
fn representative_us(k: usize) -> f64 {
    1000.0 * 1.02_f64.powf(k as f64 + 0.5)
}

impl LatencyHistogram {
    /// Reads the stored JSONB object; keys that are not bucket indexes and
    /// counts that are not positive integers are ignored (the rollup never
    /// writes them).
    pub fn from_json(value: &serde_json::Value) -> Self {
        Self::deserialize(value).unwrap_or_default()
    }

    fn add(&mut self, k: usize, n: i64) {
        if n <= 0 || k > MAX_BUCKET {
            return;
        }
        if self.0.len() <= k {
            self.0.resize(k + 1, 0);
        }
        self.0[k] += n;
    }

    pub fn merge(&mut self, other: &Self) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs;
        }
    }

    pub fn count(&self) -> i64 {
        self.0.iter().sum()
    }

    /// The q-quantile (0..=1) in microseconds, interpolated between the two
    /// neighbouring ranks as `percentile_cont` does, each rank taken at its
    /// bucket's representative value; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let pos = q.clamp(0.0, 1.0) * (total - 1) as f64;
        let (lo_rank, hi_rank) = (pos.floor() as i64, pos.ceil() as i64);
        let (mut lo, mut hi) = (None, None);
        let mut before = 0;
        for (k, n) in self.0.iter().enumerate().filter(|(_, n)| **n > 0) {
            if lo.is_none() && lo_rank < before + n {
                lo = Some(representative_us(k));
            }
            if hi_rank < before + n {
                hi = Some(representative_us(k));
                break;
            }
            before += n;
        }
        let (lo, hi) = (lo?, hi?);
        Some(lo + (hi - lo) * (pos - pos.floor()))
    }
}

/// Straight from the JSONB bytes: no `serde_json::Value` map with a
/// `String` per bucket in between.
impl FromSql<Jsonb, Pg> for LatencyHistogram {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        match value.as_bytes().split_first() {
            Some((1, json)) => Ok(serde_json::from_slice(json)?),
            _ => Err("unsupported JSONB encoding version".into()),
        }
    }
}

impl<'de> Deserialize<'de> for LatencyHistogram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HistogramVisitor)
    }
}

struct HistogramVisitor;

impl<'de> Visitor<'de> for HistogramVisitor {
    type Value = LatencyHistogram;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of bucket index to count")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut h = LatencyHistogram::default();
        while let Some(Bucket(k)) = map.next_key()? {
            let n: serde_json::Value = map.next_value()?;
            if let (Some(k), Some(n)) = (k, n.as_i64()) {
                h.add(k, n);
            }
        }
        Ok(h)
    }

    /// Anything but an object holds no buckets.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(LatencyHistogram::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(LatencyHistogram::default())
    }
}

/// A key of the stored object: its bucket index, or `None` when it is not one.
struct Bucket(Option<usize>);

impl<'de> Deserialize<'de> for Bucket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Bucket;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a bucket index as a string")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Bucket, E> {
                Ok(Bucket(key.parse().ok()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_merges_and_counts() {
        let mut a = LatencyHistogram::from_json(&json!({"3": 2, "10": 1, "x": 5, "4": 0}));
        let b = LatencyHistogram::from_json(&json!({"3": 1, "200": 4}));
        a.merge(&b);
        assert_eq!(a.count(), 8);
        assert_eq!(a.0.get(3), Some(&3));
        assert_eq!(a.0.len(), 201);
        assert_eq!(LatencyHistogram::from_json(&json!([])).quantile(0.5), None);
        assert_eq!(
            LatencyHistogram::from_json(&json!({"-1": 3, "4097": 2, "1.5": 1, "7": "2"})),
            LatencyHistogram::default()
        );
    }

    #[test]
    fn reads_the_jsonb_bytes_like_the_json_value() {
        let text = r#"{"3": 2, "10": 1, "x": 5, "4": 0, "250": 7}"#;
        let direct: LatencyHistogram = serde_json::from_str(text).unwrap_or_default();
        let via_value =
            LatencyHistogram::from_json(&serde_json::from_str(text).unwrap_or_default());
        assert_eq!(direct, via_value);
        assert_eq!(direct.count(), 10);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        // Ranks 0..=3 in bucket 0, ranks 4..=5 in bucket 100.
        let h = LatencyHistogram::from_json(&json!({"0": 4, "100": 2}));
        let (lo, hi) = (representative_us(0), representative_us(100));
        assert_eq!(h.quantile(0.0), Some(lo));
        assert_eq!(h.quantile(1.0), Some(hi));
        // pos = 0.7 * 5 = 3.5: halfway between rank 3 (bucket 0) and rank 4.
        let mid = h.quantile(0.7).unwrap_or_default();
        assert!((mid - (lo + hi) / 2.0).abs() < 1e-6, "{mid}");
    }

    #[test]
    fn within_two_percent_of_exact_percentiles() {
        // Latencies from 1 ms to about 20 s, spread log-uniformly.
        let mut samples: Vec<f64> = (0..5_000)
            .map(|i| 1000.0 * (f64::from(i) / 500.0).exp())
            .collect();
        let mut h = LatencyHistogram::default();
        for us in &samples {
            let k = (us / 1000.0).ln() / 1.02_f64.ln();
            h.add(k.floor() as usize, 1);
        }
        samples.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.95, 0.99] {
            let pos = q * (samples.len() - 1) as f64;
            let (lo, hi) = (samples[pos.floor() as usize], samples[pos.ceil() as usize]);
            let exact = lo + (hi - lo) * (pos - pos.floor());
            let got = h.quantile(q).unwrap_or_default();
            assert!(
                (got - exact).abs() / exact <= 0.02,
                "p{q}: {got} vs {exact}"
            );
        }
    }
}
