//! DetectRegressions: the figures of a baseline and a recent window per
//! ticker, merged from the rollups; the judgement is made by the caller.

use super::Period;
use crate::{DbError, PgPool};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct WindowPair {
    #[diesel(sql_type = Text)]
    pub ticker: String,
    #[diesel(sql_type = BigInt)]
    pub base_terminal: i64,
    #[diesel(sql_type = BigInt)]
    pub recent_terminal: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub base_avg_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub recent_avg_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub base_p95_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub recent_p95_ms: Option<f64>,
    #[diesel(sql_type = BigInt)]
    pub base_errors: i64,
    #[diesel(sql_type = BigInt)]
    pub base_events: i64,
    #[diesel(sql_type = BigInt)]
    pub recent_errors: i64,
    #[diesel(sql_type = BigInt)]
    pub recent_events: i64,
}

/// Per ticker (and '*'), both windows' totals side by side.
pub async fn windows(
    pool: &PgPool,
    period: Period,
    baseline: (DateTime<Utc>, DateTime<Utc>),
    recent: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<WindowPair>, DbError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "WITH w AS ( \
             SELECT normalised_ticker AS ticker, period_start >= $4 AS recent, \
                    sum(terminal_events)::bigint AS terminal, sum(processing_time_sum_us)::float8 AS sum_us, \
                    sum(error_events)::bigint AS errors, sum(total_events)::bigint AS events, \
                    histogram_merge(latency_histogram) AS h \
             FROM signal_metrics_summary \
             WHERE period_type = $1::metrics_period \
               AND ((period_start >= $2 AND period_start < $3) OR (period_start >= $4 AND period_start < $5)) \
             GROUP BY 1, 2) \
         SELECT b.ticker, b.terminal AS base_terminal, r.terminal AS recent_terminal, \
                b.sum_us / NULLIF(b.terminal, 0) / 1000 AS base_avg_ms, \
                r.sum_us / NULLIF(r.terminal, 0) / 1000 AS recent_avg_ms, \
                histogram_quantile(b.h, 0.95) / 1000 AS base_p95_ms, \
                histogram_quantile(r.h, 0.95) / 1000 AS recent_p95_ms, \
                b.errors AS base_errors, b.events AS base_events, \
                r.errors AS recent_errors, r.events AS recent_events \
         FROM w b JOIN w r ON r.ticker = b.ticker AND r.recent AND NOT b.recent \
         ORDER BY b.ticker",
    )
    .bind::<Text, _>(period.as_str())
    .bind::<Timestamptz, _>(baseline.0)
    .bind::<Timestamptz, _>(baseline.1)
    .bind::<Timestamptz, _>(recent.0)
    .bind::<Timestamptz, _>(recent.1)
    .load(&mut conn)
    .await?)
}
