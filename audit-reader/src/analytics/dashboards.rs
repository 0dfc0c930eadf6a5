//! GetMetrics, GetTimeSeries and GetErrorBreakdown: the dashboards, read from
//! the rollups and cached by rollup version.

use super::{
    AnalyticsService, bounded_range, micros, period, series_metric, snapshot, ticker_scope,
};
use crate::error::ReadError;
use crate::queries::analytics::{self as queries, errors, metrics};
use audit_core::{DomainError, Period, SignalStatus};
use audit_proto::v1 as pb;
use audit_wire::convert::{status_to_proto, to_timestamp};

const MAX_WINDOW: i32 = 1_000;

pub(super) async fn get_metrics(
    service: &AnalyticsService,
    request: pb::GetMetricsRequest,
) -> Result<pb::GetMetricsResponse, ReadError> {
    let period = period(request.bucket_size)?;
    let (from, to) = bounded_range("time_range", request.time_range.as_ref(), period)?;
    let mut conn = service.pool.get().await?;
    snapshot(&mut conn)
        .run(async |conn| {
            let ticker = ticker_scope(conn, "ticker", &request.ticker).await?;
            let as_of = queries::as_of(conn).await?;
            service
                .cached("GetMetrics", as_of, &request, async {
                    let (buckets, total) =
                        metrics::metrics(conn, period, &ticker, from, to).await?;
                    Ok(pb::GetMetricsResponse {
                        buckets: buckets.into_iter().map(bucket).collect(),
                        total: Some(bucket(total)),
                        as_of: Some(to_timestamp(as_of)),
                    })
                })
                .await
        })
        .await
}

pub(super) async fn get_time_series(
    service: &AnalyticsService,
    request: pb::GetTimeSeriesRequest,
) -> Result<pb::GetTimeSeriesResponse, ReadError> {
    let period = period(request.bucket_size)?;
    let (from, to) = bounded_range("time_range", request.time_range.as_ref(), period)?;
    let metric = series_metric("metric", request.metric)?;
    let window = match request.moving_average_window {
        0 => 5,
        w @ 1..=MAX_WINDOW => w,
        w => {
            return Err(DomainError::invalid(
                "moving_average_window",
                format!("{w} is outside 1..={MAX_WINDOW}"),
            )
            .into());
        }
    };
    let mut conn = service.pool.get().await?;
    snapshot(&mut conn)
        .run(async |conn| {
            let ticker = ticker_scope(conn, "ticker", &request.ticker).await?;
            let as_of = queries::as_of(conn).await?;
            service
                .cached("GetTimeSeries", as_of, &request, async {
                    let points =
                        metrics::time_series(conn, period, &ticker, from, to, metric, window)
                            .await?;
                    Ok(pb::GetTimeSeriesResponse {
                        points: points
                            .into_iter()
                            .map(|p| pb::TimeSeriesPoint {
                                start: Some(to_timestamp(p.start)),
                                value: p.value,
                                moving_average: p.moving_average,
                                has_data: p.has_data,
                            })
                            .collect(),
                        as_of: Some(to_timestamp(as_of)),
                    })
                })
                .await
        })
        .await
}

pub(super) async fn get_error_breakdown(
    service: &AnalyticsService,
    request: pb::GetErrorBreakdownRequest,
) -> Result<pb::GetErrorBreakdownResponse, ReadError> {
    // Answered from day, hour and minute error rollups, so the range is
    // bounded like an hourly series.
    let (from, to) = bounded_range("time_range", request.time_range.as_ref(), Period::Hour)?;
    let mut conn = service.pool.get().await?;
    snapshot(&mut conn)
        .run(async |conn| {
            let ticker = ticker_scope(conn, "ticker", &request.ticker).await?;
            let as_of = queries::as_of(conn).await?;
            service
                .cached("GetErrorBreakdown", as_of, &request, async {
                    let rows = errors::breakdown(conn, from, to, &ticker).await?;
                    let pick = |dimension: &str| -> Vec<pb::ErrorCount> {
                        rows.iter()
                            .filter(|r| r.dimension == dimension)
                            .map(|r| pb::ErrorCount {
                                key: r.key.clone(),
                                count: r.count,
                            })
                            .collect()
                    };
                    let by_type = pick("type");
                    Ok(pb::GetErrorBreakdownResponse {
                        total: by_type.iter().map(|c| c.count).sum(),
                        by_type,
                        by_http_status: pick("http_status"),
                        by_ticker: pick("ticker"),
                        by_stage: pick("stage"),
                        as_of: Some(to_timestamp(as_of)),
                    })
                })
                .await
        })
        .await
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn bucket(row: metrics::MetricsRow) -> pb::MetricsBucket {
    let metrics::MetricsRow {
        period_start,
        period_end,
        counts: row,
        p50_us,
        p95_us,
        p99_us,
    } = row;
    let counts = [
        (SignalStatus::Received, row.total_signals),
        (SignalStatus::QueuedProcessing, row.queued_processing),
        (SignalStatus::Processing, row.processing),
        (SignalStatus::Approved, row.approved_signals),
        (SignalStatus::Rejected, row.rejected_signals),
        (SignalStatus::QueuedForwarding, row.queued_forwarding),
        (SignalStatus::Forwarding, row.forwarding),
        (SignalStatus::ForwardedSuccess, row.forwarded_success),
        (SignalStatus::ForwardedTimeout, row.forwarded_timeout),
        (SignalStatus::ForwardedHttpError, row.forwarded_http_error),
        (
            SignalStatus::ForwardedGenericError,
            row.forwarded_generic_error,
        ),
        (SignalStatus::Discarded, row.discarded),
        (SignalStatus::Error, row.error_status),
    ];
    let seconds = (period_end - period_start).num_milliseconds() as f64 / 1000.0;
    pb::MetricsBucket {
        start: Some(to_timestamp(period_start)),
        end: Some(to_timestamp(period_end)),
        signals: row.total_signals,
        events: row.total_events,
        events_by_status: counts
            .into_iter()
            .map(|(status, count)| pb::StatusCount {
                status: status_to_proto(status).into(),
                count,
            })
            .collect(),
        error_events: row.error_events,
        terminal_events: row.terminal_events,
        throughput_per_second: if seconds > 0.0 {
            row.total_signals as f64 / seconds
        } else {
            0.0
        },
        success_rate: ratio(row.forwarded_success, row.terminal_events),
        error_rate: ratio(row.error_events, row.total_events),
        avg_processing_time: (row.terminal_events > 0)
            .then(|| micros(row.processing_time_sum_us as f64 / row.terminal_events as f64)),
        p50_processing_time: p50_us.map(micros),
        p95_processing_time: p95_us.map(micros),
        p99_processing_time: p99_us.map(micros),
    }
}
