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

use std::collections::BTreeMap;

/// Bucket index -> count, ordered by latency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram(BTreeMap<i32, i64>);

/// Microseconds a bucket stands for: the geometric middle of its bounds.
fn representative_us(k: i32) -> f64 {
    1000.0 * 1.02_f64.powf(f64::from(k) + 0.5)
}

impl LatencyHistogram {
    /// Reads the stored JSONB object; keys that are not bucket indexes and
    /// counts that are not positive integers are ignored (the rollup never
    /// writes them).
    pub fn from_json(value: &serde_json::Value) -> Self {
        let mut h = Self::default();
        if let Some(map) = value.as_object() {
            for (k, n) in map {
                if let (Ok(k), Some(n)) = (k.parse::<i32>(), n.as_i64())
                    && n > 0
                {
                    *h.0.entry(k).or_default() += n;
                }
            }
        }
        h
    }

    pub fn merge(&mut self, other: &Self) {
        for (k, n) in &other.0 {
            *self.0.entry(*k).or_default() += n;
        }
    }

    pub fn count(&self) -> i64 {
        self.0.values().sum()
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
        for (k, n) in &self.0 {
            if lo.is_none() && lo_rank < before + n {
                lo = Some(representative_us(*k));
            }
            if hi_rank < before + n {
                hi = Some(representative_us(*k));
                break;
            }
            before += n;
        }
        let (lo, hi) = (lo?, hi?);
        Some(lo + (hi - lo) * (pos - pos.floor()))
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
        assert_eq!(a.0.get(&3), Some(&3));
        assert_eq!(LatencyHistogram::from_json(&json!([])).quantile(0.5), None);
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
            *h.0.entry(k.floor() as i32).or_default() += 1;
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
