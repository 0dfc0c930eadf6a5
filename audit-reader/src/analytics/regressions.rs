//! DetectRegressions: per ticker, a recent window against a baseline. The
//! figures come from the rollups; the judgement is [`judge`], pure and
//! unit-tested: a latency regression when the recent mean is `latency_ratio`
//! times the baseline's, an error-rate regression when the rate rose by at
//! least `error_rate_increase` AND a two-proportion z-test says the rise is
//! not chance (z ≥ 3).

use super::{AnalyticsService, MAX_BUCKETS, snapshot};
use crate::error::ReadError;
use crate::queries::analytics::{
    self as queries,
    regressions::{self, WindowPair},
};
use audit_core::{DomainError, Period};
use audit_proto::v1 as pb;
use audit_wire::convert::to_timestamp;
use audit_wire::decode::closed_range;
use chrono::{DateTime, Utc};

/// The thresholds of one request; zero in the request means the default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Thresholds {
    pub min_samples: i64,
    pub latency_ratio: f64,
    pub error_rate_increase: f64,
}

impl Thresholds {
    pub const DEFAULT: Self = Self {
        min_samples: 20,
        latency_ratio: 1.5,
        error_rate_increase: 0.02,
    };
    /// How many standard errors a rise in error rate must be.
    pub const MIN_Z: f64 = 3.0;

    fn from_request(request: &pb::DetectRegressionsRequest) -> Self {
        let or = |value: f64, default: f64| if value > 0.0 { value } else { default };
        Self {
            min_samples: if request.min_samples > 0 {
                request.min_samples
            } else {
                Self::DEFAULT.min_samples
            },
            latency_ratio: or(request.latency_ratio, Self::DEFAULT.latency_ratio),
            error_rate_increase: or(
                request.error_rate_increase,
                Self::DEFAULT.error_rate_increase,
            ),
        }
    }
}

/// The two-proportion z statistic of `recent` failures against `base`
/// (pooled standard error); 0 when there is no variance to compare.
pub(crate) fn error_rate_z(base: (i64, i64), recent: (i64, i64)) -> f64 {
    let ((base_errors, base_events), (recent_errors, recent_events)) = (base, recent);
    let p1 = base_errors as f64 / base_events as f64;
    let p2 = recent_errors as f64 / recent_events as f64;
    let pooled = (base_errors + recent_errors) as f64 / (base_events + recent_events) as f64;
    let se =
        (pooled * (1.0 - pooled) * (1.0 / base_events as f64 + 1.0 / recent_events as f64)).sqrt();
    if se > 0.0 { (p2 - p1) / se } else { 0.0 }
}

/// The regressions one ticker's windows show, latency first.
pub(crate) fn judge(w: &WindowPair, t: &Thresholds) -> Vec<pb::Regression> {
    let mut found = Vec::new();
    let p95 = |ms: Option<f64>| ms.unwrap_or(0.0);
    if let (Some(base), Some(now)) = (w.base_avg_ms, w.recent_avg_ms)
        && w.base_terminal >= t.min_samples
        && w.recent_terminal >= t.min_samples
        && base > 0.0
        && now / base >= t.latency_ratio
    {
        found.push(pb::Regression {
            kind: pb::RegressionKind::Latency.into(),
            ticker: w.ticker.clone(),
            baseline_value: base,
            recent_value: now,
            change: now / base,
            baseline_samples: w.base_terminal,
            recent_samples: w.recent_terminal,
            z: 0.0,
            unit: "ms".into(),
            baseline_p95_ms: p95(w.base_p95_ms),
            recent_p95_ms: p95(w.recent_p95_ms),
        });
    }
    if w.base_events >= t.min_samples && w.recent_events >= t.min_samples {
        let p1 = w.base_errors as f64 / w.base_events as f64;
        let p2 = w.recent_errors as f64 / w.recent_events as f64;
        let z = error_rate_z(
            (w.base_errors, w.base_events),
            (w.recent_errors, w.recent_events),
        );
        if p2 - p1 >= t.error_rate_increase && z >= Thresholds::MIN_Z {
            found.push(pb::Regression {
                kind: pb::RegressionKind::ErrorRate.into(),
                ticker: w.ticker.clone(),
                baseline_value: p1,
                recent_value: p2,
                change: p2 - p1,
                baseline_samples: w.base_events,
                recent_samples: w.recent_events,
                z,
                unit: "fraction".into(),
                baseline_p95_ms: p95(w.base_p95_ms),
                recent_p95_ms: p95(w.recent_p95_ms),
            });
        }
    }
    found
}

/// Minute rollups while both windows span at most `MAX_BUCKETS` minutes,
/// hour rollups beyond (bucket edges then round the windows to whole hours).
fn resolution(
    baseline: (DateTime<Utc>, DateTime<Utc>),
    recent: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Period, DomainError> {
    let span = (recent.1 - baseline.0).num_seconds();
    let period = if span / Period::Minute.seconds() <= MAX_BUCKETS {
        Period::Minute
    } else {
        Period::Hour
    };
    if span / period.seconds() > MAX_BUCKETS {
        return Err(DomainError::invalid(
            "baseline",
            format!("baseline.start to recent.end is more than {MAX_BUCKETS} hours"),
        ));
    }
    Ok(period)
}

pub(super) async fn detect_regressions(
    service: &AnalyticsService,
    request: pb::DetectRegressionsRequest,
) -> Result<pb::DetectRegressionsResponse, ReadError> {
    let baseline = closed_range("baseline", request.baseline.as_ref())?;
    let recent = closed_range("recent", request.recent.as_ref())?;
    if baseline.1 > recent.0 {
        return Err(DomainError::invalid("baseline", "must end before recent starts").into());
    }
    let period = resolution(baseline, recent)?;
    let thresholds = Thresholds::from_request(&request);
    let mut conn = service.replicas.any().get().await?;
    let (windows, as_of) = snapshot(&mut conn)
        .run(async |conn| {
            let as_of = queries::as_of(conn).await?;
            let windows = regressions::windows(conn, period, baseline, recent).await?;
            Ok::<_, ReadError>((windows, as_of))
        })
        .await?;
    let mut found: Vec<pb::Regression> =
        windows.iter().flat_map(|w| judge(w, &thresholds)).collect();
    found.sort_by(|a, b| b.change.total_cmp(&a.change));
    Ok(pb::DetectRegressionsResponse {
        regressions: found,
        as_of: Some(to_timestamp(as_of)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> WindowPair {
        WindowPair {
            ticker: "AAPL".into(),
            base_terminal: 100,
            recent_terminal: 100,
            base_avg_ms: Some(100.0),
            recent_avg_ms: Some(100.0),
            base_p95_ms: Some(150.0),
            recent_p95_ms: Some(150.0),
            base_errors: 10,
            base_events: 1_000,
            recent_errors: 10,
            recent_events: 1_000,
        }
    }

    #[test]
    fn z_test_matches_a_hand_computation() {
        // p1 = 0.01, p2 = 0.05, pooled 0.03, se = sqrt(0.03*0.97*(2/1000)).
        let z = error_rate_z((10, 1_000), (50, 1_000));
        let expected = 0.04 / (0.03f64 * 0.97 * 0.002).sqrt();
        assert!((z - expected).abs() < 1e-9, "{z} vs {expected}");
        assert_eq!(error_rate_z((0, 100), (0, 100)), 0.0);
        assert!(error_rate_z((50, 1_000), (10, 1_000)) < 0.0);
    }

    #[test]
    fn judges_latency_and_error_rate_against_the_thresholds() {
        let t = Thresholds::DEFAULT;
        assert!(judge(&window(), &t).is_empty());

        let slow = WindowPair {
            recent_avg_ms: Some(150.0),
            ..window()
        };
        let found = judge(&slow, &t);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, pb::RegressionKind::Latency as i32);
        assert!((found[0].change - 1.5).abs() < 1e-12);

        let few = WindowPair {
            recent_terminal: 19,
            ..slow.clone()
        };
        assert!(judge(&few, &t).is_empty(), "below min_samples");

        let failing = WindowPair {
            recent_errors: 50,
            ..window()
        };
        let found = judge(&failing, &t);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, pb::RegressionKind::ErrorRate as i32);
        assert!(found[0].z >= Thresholds::MIN_Z);

        // A rise above the threshold that is not significant: 1 of 20 to 2 of 20.
        let noisy = WindowPair {
            base_errors: 1,
            base_events: 20,
            recent_errors: 2,
            recent_events: 20,
            ..window()
        };
        assert!(judge(&noisy, &t).is_empty());
    }

    #[test]
    fn zero_thresholds_mean_the_defaults() {
        let request = pb::DetectRegressionsRequest::default();
        assert_eq!(Thresholds::from_request(&request), Thresholds::DEFAULT);
        let request = pb::DetectRegressionsRequest {
            min_samples: 5,
            latency_ratio: 2.0,
            ..Default::default()
        };
        let t = Thresholds::from_request(&request);
        assert_eq!((t.min_samples, t.latency_ratio), (5, 2.0));
        assert_eq!(
            t.error_rate_increase,
            Thresholds::DEFAULT.error_rate_increase
        );
    }
}
