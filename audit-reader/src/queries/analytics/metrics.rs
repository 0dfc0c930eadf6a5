//! GetMetrics and GetTimeSeries: answered from `signal_metrics_summary`.

use super::histogram::LatencyHistogram;
use super::rollup_key;
use audit_core::Period;
use audit_core::TickerScope;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Double, Integer, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// One bucket (or the merge of a range of them).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub counts: Counts,
    pub p50_us: Option<f64>,
    pub p95_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// The additive figures of a summary row: a range's figures are their sums.
#[derive(Debug, Clone, Default, PartialEq, QueryableByName)]
pub struct Counts {
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
}

impl Counts {
    fn add(&mut self, o: &Self) {
        self.total_events += o.total_events;
        self.total_signals += o.total_signals;
        self.queued_processing += o.queued_processing;
        self.processing += o.processing;
        self.approved_signals += o.approved_signals;
        self.rejected_signals += o.rejected_signals;
        self.queued_forwarding += o.queued_forwarding;
        self.forwarding += o.forwarding;
        self.forwarded_success += o.forwarded_success;
        self.forwarded_timeout += o.forwarded_timeout;
        self.forwarded_http_error += o.forwarded_http_error;
        self.forwarded_generic_error += o.forwarded_generic_error;
        self.discarded += o.discarded;
        self.error_status += o.error_status;
        self.error_events += o.error_events;
        self.terminal_events += o.terminal_events;
        self.processing_time_sum_us += o.processing_time_sum_us;
    }
}

#[derive(QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    period_end: DateTime<Utc>,
    #[diesel(embed)]
    counts: Counts,
    #[diesel(sql_type = Jsonb)]
    latency_histogram: LatencyHistogram,
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

fn with_quantiles(
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    counts: Counts,
    h: &LatencyHistogram,
) -> MetricsRow {
    MetricsRow {
        period_start,
        period_end,
        counts,
        p50_us: h.quantile(0.5),
        p95_us: h.quantile(0.95),
        p99_us: h.quantile(0.99),
    }
}

/// Per-bucket rows, oldest first, and the whole range merged (sums of the
/// same rows, histograms merged), read in one query.
#[tracing::instrument(name = "SELECT signal_metrics_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_metrics_summary"))]
pub async fn metrics(
    conn: &mut AsyncPgConnection,
    period: Period,
    ticker: &TickerScope,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Vec<MetricsRow>, MetricsRow), DbError> {
    let rows: Vec<SummaryRow> = diesel::sql_query(format!(
        "SELECT period_start, period_end, {COUNTS}, latency_histogram {RANGE} ORDER BY period_start"
    ))
    .bind::<Text, _>(period.as_str())
    .bind::<Text, _>(rollup_key(ticker))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load(conn)
    .await?;
    let mut total_counts = Counts::default();
    let mut total_histogram = LatencyHistogram::default();
    let buckets = rows
        .into_iter()
        .map(|row| {
            total_counts.add(&row.counts);
            total_histogram.merge(&row.latency_histogram);
            with_quantiles(
                row.period_start,
                row.period_end,
                row.counts,
                &row.latency_histogram,
            )
        })
        .collect();
    let start = period.floor(from);
    let total = with_quantiles(start, to, total_counts, &total_histogram);
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
#[tracing::instrument(name = "SELECT signal_metrics_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_metrics_summary"))]
pub async fn time_series(
    conn: &mut AsyncPgConnection,
    period: Period,
    ticker: &TickerScope,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    metric: SeriesMetric,
    window: i32,
) -> Result<Vec<SeriesPoint>, DbError> {
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
    .bind::<Text, _>(rollup_key(ticker))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Integer, _>(window)
    .load(conn)
    .await?)
}
