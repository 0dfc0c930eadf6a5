//! GetMetrics and GetTimeSeries: answered from `signal_metrics_summary`.

use super::Period;
use crate::{DbError, PgPool};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Double, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

/// One bucket (or the merge of a range of them).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct MetricsRow {
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub period_end: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub total_events: i64,
    #[diesel(sql_type = BigInt)]
    pub total_signals: i64,
    #[diesel(sql_type = BigInt)]
    pub queued_processing: i64,
    #[diesel(sql_type = BigInt)]
    pub processing: i64,
    #[diesel(sql_type = BigInt)]
    pub approved_signals: i64,
    #[diesel(sql_type = BigInt)]
    pub rejected_signals: i64,
    #[diesel(sql_type = BigInt)]
    pub queued_forwarding: i64,
    #[diesel(sql_type = BigInt)]
    pub forwarding: i64,
    #[diesel(sql_type = BigInt)]
    pub forwarded_success: i64,
    #[diesel(sql_type = BigInt)]
    pub forwarded_timeout: i64,
    #[diesel(sql_type = BigInt)]
    pub forwarded_http_error: i64,
    #[diesel(sql_type = BigInt)]
    pub forwarded_generic_error: i64,
    #[diesel(sql_type = BigInt)]
    pub discarded: i64,
    #[diesel(sql_type = BigInt)]
    pub error_status: i64,
    #[diesel(sql_type = BigInt)]
    pub error_events: i64,
    #[diesel(sql_type = BigInt)]
    pub terminal_events: i64,
    #[diesel(sql_type = BigInt)]
    pub processing_time_sum_us: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub p50_us: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub p95_us: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub p99_us: Option<f64>,
}

const COUNTS: &str = "total_events, total_signals, queued_processing, processing, approved_signals, \
    rejected_signals, queued_forwarding, forwarding, forwarded_success, forwarded_timeout, \
    forwarded_http_error, forwarded_generic_error, discarded, error_status, error_events, \
    terminal_events, processing_time_sum_us";

/// Rows of one bucket size and ticker ('*' for all) whose start lies in
/// [date_trunc(from), to).
const RANGE: &str = "FROM signal_metrics_summary \
    WHERE period_type = $1::metrics_period AND normalised_ticker = $2 \
      AND period_start >= date_trunc($1, $3) AND period_start < $4";

/// Per-bucket rows, oldest first, and the whole range merged.
pub async fn metrics(
    pool: &PgPool,
    period: Period,
    ticker: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Vec<MetricsRow>, MetricsRow), DbError> {
    let mut conn = pool.get().await?;
    let quantiles = |h: &str| {
        format!(
            "histogram_quantile({h}, 0.5) AS p50_us, histogram_quantile({h}, 0.95) AS p95_us, \
             histogram_quantile({h}, 0.99) AS p99_us"
        )
    };
    let buckets: Vec<MetricsRow> = diesel::sql_query(format!(
        "SELECT period_start, period_end, {COUNTS}, {} {RANGE} ORDER BY period_start",
        quantiles("latency_histogram")
    ))
    .bind::<Text, _>(period.as_str())
    .bind::<Text, _>(ticker)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load(&mut conn)
    .await?;
    let sums: String = COUNTS
        .split(", ")
        .map(|c| format!("COALESCE(sum({c}), 0)::bigint AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let total: MetricsRow = diesel::sql_query(format!(
        "SELECT date_trunc($1, $3) AS period_start, $4 AS period_end, {sums}, {} {RANGE}",
        quantiles("histogram_merge(latency_histogram)")
    ))
    .bind::<Text, _>(period.as_str())
    .bind::<Text, _>(ticker)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .get_result(&mut conn)
    .await?;
    Ok((buckets, total))
}

/// The metrics a time series can show, as SQL over one summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesMetric {
    Signals,
    Events,
    ErrorEvents,
    ErrorRate,
    SuccessRate,
    AvgProcessingMs,
    P95ProcessingMs,
}

impl SeriesMetric {
    pub(crate) fn expression(self) -> &'static str {
        match self {
            Self::Signals => "total_signals::float8",
            Self::Events => "total_events::float8",
            Self::ErrorEvents => "error_events::float8",
            Self::ErrorRate => "error_events::float8 / NULLIF(total_events, 0)",
            Self::SuccessRate => "forwarded_success::float8 / NULLIF(terminal_events, 0)",
            Self::AvgProcessingMs => {
                "processing_time_sum_us::float8 / NULLIF(terminal_events, 0) / 1000"
            }
            Self::P95ProcessingMs => "histogram_quantile(latency_histogram, 0.95) / 1000",
        }
    }
}

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct SeriesPoint {
    #[diesel(sql_type = Timestamptz)]
    pub start: DateTime<Utc>,
    #[diesel(sql_type = Double)]
    pub value: f64,
    #[diesel(sql_type = Double)]
    pub moving_average: f64,
    #[diesel(sql_type = Bool)]
    pub has_data: bool,
}

/// Every bucket of the range (generate_series fills the gaps with 0) and a
/// trailing moving average over `window` buckets (a window function).
pub async fn time_series(
    pool: &PgPool,
    period: Period,
    ticker: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    metric: SeriesMetric,
    window: i32,
) -> Result<Vec<SeriesPoint>, DbError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(format!(
        "WITH buckets AS ( \
             SELECT generate_series(date_trunc($1, $3), $4 - interval '1 microsecond', \
                                    ('1 ' || $1)::interval) AS start), \
         v AS (SELECT period_start, {} AS value {RANGE}) \
         SELECT b.start, COALESCE(v.value, 0) AS value, v.period_start IS NOT NULL AS has_data, \
                avg(COALESCE(v.value, 0)) OVER (ORDER BY b.start \
                    ROWS BETWEEN $5 - 1 PRECEDING AND CURRENT ROW) AS moving_average \
         FROM buckets b LEFT JOIN v ON v.period_start = b.start ORDER BY b.start",
        metric.expression()
    ))
    .bind::<Text, _>(period.as_str())
    .bind::<Text, _>(ticker)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Integer, _>(window)
    .load(&mut conn)
    .await?)
}
