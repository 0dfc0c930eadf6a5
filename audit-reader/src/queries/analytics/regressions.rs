//! DetectRegressions: the figures of a baseline and a recent window per
//! ticker, merged from the rollups; the judgement is made by the caller.

use super::errors::tiles;
use super::histogram::LatencyHistogram;
use audit_core::Period;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Double, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, Clone, PartialEq)]
pub struct WindowPair {
    pub ticker: String,
    pub base_terminal: i64,
    pub recent_terminal: i64,
    pub base_avg_ms: Option<f64>,
    pub recent_avg_ms: Option<f64>,
    pub base_p95_ms: Option<f64>,
    pub recent_p95_ms: Option<f64>,
    pub base_errors: i64,
    pub base_events: i64,
    pub recent_errors: i64,
    pub recent_events: i64,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    ticker: String,
    #[diesel(sql_type = BigInt)]
    base_terminal: i64,
    #[diesel(sql_type = BigInt)]
    recent_terminal: i64,
    #[diesel(sql_type = Nullable<Double>)]
    base_avg_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    recent_avg_ms: Option<f64>,
    #[diesel(sql_type = Jsonb)]
    base_h: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    recent_h: serde_json::Value,
    #[diesel(sql_type = BigInt)]
    base_errors: i64,
    #[diesel(sql_type = BigInt)]
    base_events: i64,
    #[diesel(sql_type = BigInt)]
    recent_errors: i64,
    #[diesel(sql_type = BigInt)]
    recent_events: i64,
}

fn p95_ms(h: &serde_json::Value) -> Option<f64> {
    LatencyHistogram::from_json(h)
        .quantile(0.95)
        .map(|us| us / 1000.0)
}

/// Per ticker (and '*'), both windows' totals side by side, over the
/// `period` buckets that start inside each window. Each window is read as
/// tiles of day, hour and minute rows ([`super::errors::tiles`]): the same
/// buckets, summed already, so a day-long baseline reads about 24 hour rows
/// and at most 120 minute rows per ticker instead of 1,440 minute rows.
/// Histograms are merged as a set in SQL (bucket counts summed per window)
/// and their p95 taken in Rust; the per-row `histogram_merge` aggregate took
/// seconds over a day of minute rows.
#[tracing::instrument(name = "SELECT signal_metrics_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_metrics_summary"))]
pub async fn windows(
    conn: &mut AsyncPgConnection,
    period: Period,
    baseline: (DateTime<Utc>, DateTime<Utc>),
    recent: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<WindowPair>, DbError> {
    let mut periods: Vec<&str> = Vec::new();
    let mut starts: Vec<DateTime<Utc>> = Vec::new();
    let mut ends: Vec<DateTime<Utc>> = Vec::new();
    let mut is_recent: Vec<bool> = Vec::new();
    for (window, flag) in [(baseline, false), (recent, true)] {
        let (lo, hi) = (period.ceil(window.0), period.ceil(window.1));
        if lo >= hi {
            continue;
        }
        for tile in tiles(lo, hi) {
            periods.push(tile.period.as_str());
            starts.push(tile.start);
            ends.push(tile.end);
            is_recent.push(flag);
        }
    }
    let rows: Vec<Row> = diesel::sql_query(
        "WITH tiles AS ( \
             SELECT p::metrics_period AS period, lo, hi, recent \
             FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bool[]) \
                 AS t(p, lo, hi, recent)), \
         src AS ( \
             SELECT m.normalised_ticker AS ticker, t.recent, m.terminal_events, \
                    m.processing_time_sum_us, m.error_events, m.total_events, m.latency_histogram \
             FROM tiles t JOIN signal_metrics_summary m \
               ON m.period_type = t.period AND m.period_start >= t.lo AND m.period_start < t.hi), \
         w AS ( \
             SELECT ticker, recent, sum(terminal_events)::bigint AS terminal, \
                    sum(processing_time_sum_us)::float8 AS sum_us, \
                    sum(error_events)::bigint AS errors, sum(total_events)::bigint AS events \
             FROM src GROUP BY 1, 2), \
         h AS ( \
             SELECT ticker, recent, jsonb_object_agg(k, n) AS h \
             FROM (SELECT ticker, recent, j.key AS k, sum(j.value::bigint) AS n \
                   FROM src, jsonb_each_text(src.latency_histogram) AS j GROUP BY 1, 2, 3) t \
             GROUP BY 1, 2) \
         SELECT b.ticker::text AS ticker, b.terminal AS base_terminal, r.terminal AS recent_terminal, \
                b.sum_us / NULLIF(b.terminal, 0) / 1000 AS base_avg_ms, \
                r.sum_us / NULLIF(r.terminal, 0) / 1000 AS recent_avg_ms, \
                COALESCE(bh.h, '{}') AS base_h, COALESCE(rh.h, '{}') AS recent_h, \
                b.errors AS base_errors, b.events AS base_events, \
                r.errors AS recent_errors, r.events AS recent_events \
         FROM w b JOIN w r ON r.ticker = b.ticker AND r.recent AND NOT b.recent \
         LEFT JOIN h bh ON bh.ticker = b.ticker AND NOT bh.recent \
         LEFT JOIN h rh ON rh.ticker = r.ticker AND rh.recent \
         ORDER BY b.ticker",
    )
    .bind::<Array<Text>, _>(periods)
    .bind::<Array<Timestamptz>, _>(starts)
    .bind::<Array<Timestamptz>, _>(ends)
    .bind::<Array<Bool>, _>(is_recent)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| WindowPair {
            base_p95_ms: p95_ms(&r.base_h),
            recent_p95_ms: p95_ms(&r.recent_h),
            ticker: r.ticker,
            base_terminal: r.base_terminal,
            recent_terminal: r.recent_terminal,
            base_avg_ms: r.base_avg_ms,
            recent_avg_ms: r.recent_avg_ms,
            base_errors: r.base_errors,
            base_events: r.base_events,
            recent_errors: r.recent_errors,
            recent_events: r.recent_events,
        })
        .collect())
}
