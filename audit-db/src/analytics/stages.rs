//! GetStageLatencies: lead() over each signal's timeline gives the time to
//! its next event; percentile_cont per transition gives exact percentiles.

use crate::{DbError, PgPool};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Text, Timestamptz};
use diesel_async::RunQueryDsl;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    None,
    Ticker,
    Worker,
}

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct StageRow {
    #[diesel(sql_type = Text)]
    pub from_stage: String,
    #[diesel(sql_type = Text)]
    pub to_stage: String,
    #[diesel(sql_type = Text)]
    pub group_key: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    #[diesel(sql_type = Double)]
    pub avg_ms: f64,
    #[diesel(sql_type = Double)]
    pub p50_ms: f64,
    #[diesel(sql_type = Double)]
    pub p95_ms: f64,
    #[diesel(sql_type = Double)]
    pub p99_ms: f64,
    #[diesel(sql_type = Double)]
    pub max_ms: f64,
}

pub async fn stage_latencies(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &str,
    grouping: Grouping,
) -> Result<Vec<StageRow>, DbError> {
    let group = match grouping {
        Grouping::None => "''",
        Grouping::Ticker => "normalised_ticker",
        Grouping::Worker => "coalesce(worker_id, '')",
    };
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(format!(
        "WITH ev AS ( \
             SELECT e.event_type, e.worker_id, s.normalised_ticker, \
                    lead(e.event_type) OVER w AS next_type, \
                    extract(epoch FROM lead(e.ts) OVER w - e.ts) * 1000 AS ms \
             FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id \
             WHERE e.ts >= $1 AND e.ts < $2 AND ($3 = '' OR s.normalised_ticker = $3) \
             WINDOW w AS (PARTITION BY e.signal_id ORDER BY e.ts, e.sequence)) \
         SELECT event_type::text AS from_stage, next_type::text AS to_stage, {group} AS group_key, \
                count(*) AS count, avg(ms)::float8 AS avg_ms, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50_ms, \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95_ms, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99_ms, \
                max(ms)::float8 AS max_ms \
         FROM ev WHERE next_type IS NOT NULL \
         GROUP BY 1, 2, 3 ORDER BY count DESC, 1, 2, 3"
    ))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Text, _>(ticker)
    .load(&mut conn)
    .await?)
}
