//! GetStageLatencies: the time between consecutive events of each signal
//! (lag() over its whole timeline), per stage transition, filed under the
//! later event's time.
//!
//! Two sources. `hourly` reads the incrementally maintained
//! `stage_latency_hourly` table, or its per-ticker (and '*' all-ticker) sum
//! when no worker grouping is asked for (see their migration): counts,
//! averages and maxima exact, percentiles from merged histograms (within
//! 2%), as of the tables' last refresh.
//! `exact` reads raw events with percentile_cont, for short ranges only.

use super::{filter_value, rollup_key};
use crate::queries::analytics::analytics_as_of;
use crate::queries::analytics::histogram::LatencyHistogram;
use audit_core::TickerScope;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

const BY_WORKER: &str = "stage_latency_hourly";
/// The same without the worker dimension (about an eighth of the rows), for
/// every question that does not group by worker; its '*' rows are summed
/// over every ticker (a twentieth again for the overall answer).
const BY_TICKER: &str = "stage_latency_hourly_by_ticker";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    None,
    Ticker,
    Worker,
}

impl Grouping {
    /// The grouping column, in both the tables and the raw transitions.
    fn column(self) -> &'static str {
        match self {
            Self::None => "''",
            Self::Ticker => "normalised_ticker",
            Self::Worker => "worker_id",
        }
    }
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

#[derive(QueryableByName)]
struct MergedRow {
    #[diesel(sql_type = Text)]
    from_stage: String,
    #[diesel(sql_type = Text)]
    to_stage: String,
    #[diesel(sql_type = Text)]
    group_key: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Double)]
    sum_us: f64,
    #[diesel(sql_type = BigInt)]
    max_us: i64,
    #[diesel(sql_type = Jsonb)]
    histogram: LatencyHistogram,
}

/// From the hourly tables: the hours starting in [`from`, `to`) (the caller
/// aligns them to whole hours), most frequent transitions first, and when
/// the tables were refreshed. Histograms are merged as a set in SQL (every
/// row's buckets expanded and summed per bucket) rather than with the
/// per-row `histogram_merge` aggregate; quantiles are taken here.
#[tracing::instrument(name = "SELECT stage_latency_hourly", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "stage_latency_hourly"))]
pub async fn hourly(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &TickerScope,
    grouping: Grouping,
) -> Result<(Vec<StageRow>, DateTime<Utc>), DbError> {
    let group = grouping.column();
    // Which rows: per worker from the per-worker table; otherwise the
    // per-ticker rows, or the '*' rows when neither a ticker nor a ticker
    // grouping is asked for.
    let (table, tickers) = match grouping {
        Grouping::Worker => (BY_WORKER, "($3 = '' OR normalised_ticker = $3)"),
        Grouping::Ticker => (
            BY_TICKER,
            "normalised_ticker <> '*' AND ($3 = '' OR normalised_ticker = $3)",
        ),
        Grouping::None => (BY_TICKER, "normalised_ticker = $3"),
    };
    let rows: Vec<MergedRow> = diesel::sql_query(format!(
        "WITH src AS ( \
             SELECT from_stage, to_stage, {group} AS group_key, transitions, latency_sum_us, \
                    latency_max_us, latency_histogram \
             FROM {table} WHERE hour >= $1 AND hour < $2 AND {tickers}), \
         totals AS ( \
             SELECT from_stage, to_stage, group_key, sum(transitions)::bigint AS count, \
                    sum(latency_sum_us)::float8 AS sum_us, max(latency_max_us)::bigint AS max_us \
             FROM src GROUP BY 1, 2, 3), \
         hist AS ( \
             SELECT from_stage, to_stage, group_key, jsonb_object_agg(b, n) AS histogram \
             FROM (SELECT from_stage, to_stage, group_key, j.key AS b, sum(j.value::bigint) AS n \
                   FROM src, jsonb_each_text(src.latency_histogram) AS j \
                   GROUP BY 1, 2, 3, 4) t \
             GROUP BY 1, 2, 3) \
         SELECT t.from_stage, t.to_stage, t.group_key, t.count, t.sum_us, t.max_us, h.histogram \
         FROM totals t JOIN hist h USING (from_stage, to_stage, group_key) \
         ORDER BY t.count DESC, 1, 2, 3"
    ))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Text, _>(match grouping {
        Grouping::None => rollup_key(ticker),
        Grouping::Ticker | Grouping::Worker => filter_value(ticker),
    })
    .load(conn)
    .await?;
    // The same snapshot as the rows (the caller's transaction).
    let as_of = analytics_as_of(conn).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            let h = &row.histogram;
            let ms = |q: f64| h.quantile(q).unwrap_or_default() / 1000.0;
            StageRow {
                avg_ms: row.sum_us / row.count.max(1) as f64 / 1000.0,
                p50_ms: ms(0.5),
                p95_ms: ms(0.95),
                p99_ms: ms(0.99),
                max_ms: row.max_us as f64 / 1000.0,
                from_stage: row.from_stage,
                to_stage: row.to_stage,
                group_key: row.group_key,
                count: row.count,
            }
        })
        .collect();
    Ok((rows, as_of))
}

/// From raw events, percentiles exact: the same transitions as the tables
/// (lag() over each whole timeline of the signals with an event in range),
/// those whose later event lies in [`from`, `to`). Costs a scan of those
/// timelines, so callers keep the range short.
#[tracing::instrument(name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn exact(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &TickerScope,
    grouping: Grouping,
) -> Result<Vec<StageRow>, DbError> {
    let group = grouping.column();
    Ok(diesel::sql_query(format!(
        "WITH ids AS (SELECT DISTINCT signal_id FROM signal_events WHERE ts >= $1 AND ts < $2), \
         ev AS ( \
             SELECT e.ts, s.normalised_ticker, COALESCE(lag(e.worker_id) OVER w, '') AS worker_id, \
                    lag(e.event_type) OVER w AS from_type, e.event_type AS to_type, \
                    extract(epoch FROM e.ts - lag(e.ts) OVER w) * 1000 AS ms \
             FROM ids JOIN signal_events e ON e.signal_id = ids.signal_id \
             JOIN signals s ON s.signal_id = e.signal_id \
             WHERE ($3 = '' OR s.normalised_ticker = $3) \
             WINDOW w AS (PARTITION BY e.signal_id ORDER BY e.ts, e.sequence)) \
         SELECT from_type::text AS from_stage, to_type::text AS to_stage, {group} AS group_key, \
                count(*) AS count, avg(ms)::float8 AS avg_ms, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50_ms, \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95_ms, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99_ms, \
                max(ms)::float8 AS max_ms \
         FROM ev WHERE from_type IS NOT NULL AND ts >= $1 AND ts < $2 \
         GROUP BY 1, 2, 3 ORDER BY count DESC, 1, 2, 3"
    ))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Text, _>(filter_value(ticker))
    .load(conn)
    .await?)
}
