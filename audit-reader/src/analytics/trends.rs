//! GetTrends (a least-squares line per metric) and GetCorrelations (between
//! tickers' per-bucket series).

use super::{AnalyticsService, bounded_range, period, series_metric, snapshot, ticker_scope};
use crate::error::ReadError;
use crate::queries::analytics::{self as queries, rollup_key, trends};
use audit_core::DomainError;
use audit_proto::v1 as pb;
use audit_wire::convert::to_timestamp;

/// Below this fit quality a slope is noise, not a trend.
const MIN_R2: f64 = 0.25;
/// Fewer points than this make no line.
const MIN_POINTS: i64 = 3;
/// Tickers correlated when the request names none.
const BUSIEST_TICKERS: i64 = 10;

/// Up or down only for a line that fits: enough points, a slope, and r² at
/// least [`MIN_R2`].
pub(crate) fn direction(points: i64, slope: f64, r2: f64) -> pb::TrendDirection {
    if points < MIN_POINTS || r2 < MIN_R2 || slope == 0.0 {
        pb::TrendDirection::Flat
    } else if slope > 0.0 {
        pb::TrendDirection::Up
    } else {
        pb::TrendDirection::Down
    }
}

pub(super) async fn get_trends(
    service: &AnalyticsService,
    request: pb::GetTrendsRequest,
) -> Result<pb::GetTrendsResponse, ReadError> {
    let period = period(request.bucket_size)?;
    let (from, to) = bounded_range("time_range", request.time_range.as_ref(), period)?;
    let wanted = if request.metrics.is_empty() {
        vec![
            pb::Metric::Signals as i32,
            pb::Metric::ErrorRate as i32,
            pb::Metric::AvgProcessingMs as i32,
        ]
    } else {
        request.metrics.clone()
    };
    let series = wanted
        .iter()
        .enumerate()
        .map(|(i, metric)| series_metric(&format!("metrics[{i}]"), *metric))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conn = service.replicas.any().get().await?;
    snapshot(&mut conn)
        .run(async |conn| {
            let ticker = ticker_scope(conn, "ticker", &request.ticker).await?;
            let as_of = queries::as_of(conn).await?;
            let mut trends = Vec::with_capacity(series.len());
            for (metric, series) in wanted.iter().zip(series) {
                let fit = trends::trend(conn, period, &ticker, from, to, series).await?;
                let slope = fit.slope.unwrap_or(0.0);
                let r2 = fit.r2.unwrap_or(0.0);
                trends.push(pb::Trend {
                    metric: *metric,
                    slope_per_hour: slope,
                    r2,
                    direction: direction(fit.points, slope, r2).into(),
                    points: fit.points,
                });
            }
            Ok(pb::GetTrendsResponse {
                trends,
                as_of: Some(to_timestamp(as_of)),
            })
        })
        .await
}

pub(super) async fn get_correlations(
    service: &AnalyticsService,
    request: pb::GetCorrelationsRequest,
) -> Result<pb::GetCorrelationsResponse, ReadError> {
    let period = period(request.bucket_size)?;
    let (from, to) = bounded_range("time_range", request.time_range.as_ref(), period)?;
    let errors = match pb::Metric::try_from(request.metric) {
        Ok(pb::Metric::Unspecified | pb::Metric::Signals) => false,
        Ok(pb::Metric::ErrorEvents) => true,
        _ => {
            return Err(DomainError::invalid(
                "metric",
                "correlations use METRIC_SIGNALS or METRIC_ERROR_EVENTS",
            )
            .into());
        }
    };
    if !request.tickers.is_empty() && !(2..=50).contains(&request.tickers.len()) {
        return Err(DomainError::invalid("tickers", "name 2 to 50 tickers").into());
    }
    let mut conn = service.replicas.any().get().await?;
    snapshot(&mut conn)
        .run(async |conn| {
            let tickers = if request.tickers.is_empty() {
                trends::busiest_tickers(conn, period, from, to, BUSIEST_TICKERS).await?
            } else {
                let mut normalised: Vec<String> = Vec::with_capacity(request.tickers.len());
                for (i, ticker) in request.tickers.iter().enumerate() {
                    let scope = ticker_scope(conn, &format!("tickers[{i}]"), ticker).await?;
                    // An empty entry is the overall series ('*').
                    let t = rollup_key(&scope).to_owned();
                    if !normalised.contains(&t) {
                        normalised.push(t);
                    }
                }
                normalised
            };
            let as_of = queries::as_of(conn).await?;
            let pairs = trends::correlations(conn, period, &tickers, from, to, errors).await?;
            Ok(pb::GetCorrelationsResponse {
                tickers,
                pairs: pairs
                    .into_iter()
                    .map(|p| pb::Correlation {
                        ticker_a: p.ticker_a,
                        ticker_b: p.ticker_b,
                        coefficient: p.coefficient,
                        buckets: p.buckets,
                    })
                    .collect(),
                as_of: Some(to_timestamp(as_of)),
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trend_needs_points_a_fit_and_a_slope() {
        assert_eq!(direction(10, 2.0, 0.9), pb::TrendDirection::Up);
        assert_eq!(direction(10, -2.0, 0.9), pb::TrendDirection::Down);
        assert_eq!(direction(2, 2.0, 0.9), pb::TrendDirection::Flat);
        assert_eq!(direction(10, 2.0, 0.1), pb::TrendDirection::Flat);
        assert_eq!(direction(10, 0.0, 1.0), pb::TrendDirection::Flat);
        assert_eq!(direction(3, 1.0, MIN_R2), pb::TrendDirection::Up);
    }
}
