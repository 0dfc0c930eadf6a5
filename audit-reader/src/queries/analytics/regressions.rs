//! DetectRegressions: the figures of a baseline and a recent window per
//! ticker, merged from the rollups; the judgement is made by the caller.

use super::errors::tiles;
use super::histogram::LatencyHistogram;
use audit_core::Period;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::collections::BTreeMap;

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
    #[diesel(sql_type = Bool)]
    recent: bool,
    #[diesel(sql_type = BigInt)]
    terminal_events: i64,
    #[diesel(sql_type = BigInt)]
    processing_time_sum_us: i64,
    #[diesel(sql_type = BigInt)]
    error_events: i64,
    #[diesel(sql_type = BigInt)]
    total_events: i64,
    #[diesel(sql_type = Jsonb)]
    latency_histogram: LatencyHistogram,
}

/// One window's sums for one ticker.
#[derive(Default)]
struct Sums {
    rows: usize,
    terminal: i64,
    sum_us: i64,
    errors: i64,
    events: i64,
    histogram: LatencyHistogram,
}

impl Sums {
    fn add(&mut self, row: &Row) {
        self.rows += 1;
        self.terminal += row.terminal_events;
        self.sum_us += row.processing_time_sum_us;
        self.errors += row.error_events;
        self.events += row.total_events;
        self.histogram.merge(&row.latency_histogram);
    }

    fn avg_ms(&self) -> Option<f64> {
        (self.terminal > 0).then(|| self.sum_us as f64 / self.terminal as f64 / 1000.0)
    }

    fn p95_ms(&self) -> Option<f64> {
        self.histogram.quantile(0.95).map(|us| us / 1000.0)
    }
}

/// Per ticker (and '*'), both windows' totals side by side, over the
/// `period` buckets that start inside each window. Each window is read as
/// tiles of day, hour and minute rows ([`super::errors::tiles`]): the same
/// buckets, summed already, so a day-long baseline reads about 24 hour rows
/// and at most 120 minute rows per ticker instead of 1,440 minute rows.
/// The rows are summed and their histograms merged here: the per-row
/// `histogram_merge` aggregate took seconds over a day of minute rows, and
/// expanding every row's JSONB histogram into rows to sum them in SQL took
/// ~140 ms for a day of 20 tickers (BENCHMARKS.md, Analytics).
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
                 AS t(p, lo, hi, recent)) \
         SELECT m.normalised_ticker::text AS ticker, t.recent, m.terminal_events, \
                m.processing_time_sum_us, m.error_events, m.total_events, m.latency_histogram \
         FROM tiles t JOIN signal_metrics_summary m \
           ON m.period_type = t.period AND m.period_start >= t.lo AND m.period_start < t.hi",
    )
    .bind::<Array<Text>, _>(periods)
    .bind::<Array<Timestamptz>, _>(starts)
    .bind::<Array<Timestamptz>, _>(ends)
    .bind::<Array<Bool>, _>(is_recent)
    .load(conn)
    .await?;
    // Per ticker, (baseline, recent); ordered by ticker as before.
    let mut by_ticker: BTreeMap<String, (Sums, Sums)> = BTreeMap::new();
    for row in &rows {
        let (base, recent) = by_ticker.entry(row.ticker.clone()).or_default();
        if row.recent { recent } else { base }.add(row);
    }
    Ok(by_ticker
        .into_iter()
        // A ticker seen in only one window has nothing to compare.
        .filter(|(_, (base, recent))| base.rows > 0 && recent.rows > 0)
        .map(|(ticker, (base, recent))| WindowPair {
            base_avg_ms: base.avg_ms(),
            recent_avg_ms: recent.avg_ms(),
            base_p95_ms: base.p95_ms(),
            recent_p95_ms: recent.p95_ms(),
            ticker,
            base_terminal: base.terminal,
            recent_terminal: recent.terminal,
            base_errors: base.errors,
            base_events: base.events,
            recent_errors: recent.errors,
            recent_events: recent.events,
        })
        .collect())
}
