//! The data-quality checks: each is one query listing the ids at fault and
//! how many there are in all. Two users: the reader's `CheckDataQuality`
//! (on the replica, ids and all) and the writer's periodic `data_quality`
//! job (on the primary, counts for `audit_data_quality_findings`). Raw SQL:
//! anti-joins, correlated recounts and window counts. Run inside one
//! repeatable-read transaction, so the checks see one snapshot.

use crate::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Interval, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    OrphanEvents,
    StuckSignals,
    CounterMismatch,
    SummaryMismatch,
}

impl Check {
    pub const ALL: [Check; 4] = [
        Check::OrphanEvents,
        Check::StuckSignals,
        Check::CounterMismatch,
        Check::SummaryMismatch,
    ];

    /// The `kind` label of `audit_data_quality_findings`: the contract's
    /// `FindingKind` in lower case, without its prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::OrphanEvents => "orphan_events",
            Check::StuckSignals => "stuck_signals",
            Check::CounterMismatch => "counter_mismatch",
            Check::SummaryMismatch => "summary_mismatch",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub check: Check,
    pub count: i64,
    pub ids: Vec<String>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// Id claims without their event, and events without their claim.
const ORPHANS: &str = "SELECT id, count(*) OVER () AS total FROM ( \
        SELECT i.event_id::text AS id FROM signal_event_ids i \
        WHERE NOT EXISTS (SELECT 1 FROM signal_events e \
                          WHERE e.event_id = i.event_id AND e.signal_id = i.signal_id AND e.ts = i.ts) \
        UNION ALL \
        SELECT e.event_id::text FROM signal_events e \
        WHERE NOT EXISTS (SELECT 1 FROM signal_event_ids i WHERE i.event_id = e.event_id)) o \
    ORDER BY id LIMIT $1";

const STUCK: &str = "SELECT signal_id::text AS id, count(*) OVER () AS total FROM signals \
     WHERE NOT signal_status_is_terminal(current_status) AND updated_at < now() - $2 \
     ORDER BY updated_at LIMIT $1";

/// Counters recomputed from the signal's own events.
const COUNTERS: &str = "SELECT s.signal_id::text AS id, count(*) OVER () AS total FROM signals s \
    WHERE s.error_count <> (SELECT count(*) FROM signal_events e WHERE e.signal_id = s.signal_id \
                            AND (e.error_info IS NOT NULL OR e.http_status >= 400)) \
       OR s.retry_count <> (SELECT COALESCE(sum(c - 1), 0) FROM ( \
                            SELECT count(*) AS c FROM signal_events e WHERE e.signal_id = s.signal_id \
                              AND e.event_type IN ('processing', 'forwarding') GROUP BY e.event_type) t) \
    ORDER BY 1 LIMIT $1";

/// Minute buckets starting in the range whose figures raw events do not
/// reproduce: the counts and latency sum of `signal_metrics_summary`
/// (coarser buckets are sums of these) and, per ticker, the failed-event
/// total of `signal_error_summary`.
///
/// Whole minutes on both sides, so a range that starts or ends inside a
/// minute compares that whole minute. Keys still queued in `rollup_dirty`
/// are skipped: their rollups are behind, not wrong, and the refresher will
/// rewrite them. Every key whose rollup is stale is queued there (the
/// refresher takes keys and writes rollups in one transaction), so in one
/// snapshot a mismatch outside the queue is real.
const SUMMARY: &str = "WITH bounds AS (SELECT date_trunc('minute', $2::timestamptz) AS lo, $3::timestamptz AS hi), \
     raw AS ( \
        SELECT t.ticker, date_trunc('minute', e.ts) AS bucket, count(*) AS events, \
               count(*) FILTER (WHERE e.event_type = 'received') AS signals, \
               count(*) FILTER (WHERE e.error_info IS NOT NULL OR e.http_status >= 400) AS errors, \
               count(*) FILTER (WHERE signal_status_is_terminal(e.event_type)) AS terminal, \
               COALESCE(sum(GREATEST(0, (EXTRACT(EPOCH FROM e.ts - s.created_at) * 1000000)::bigint)) \
                        FILTER (WHERE signal_status_is_terminal(e.event_type)), 0)::bigint AS latency_us \
        FROM bounds b JOIN signal_events e \
          ON e.ts >= b.lo AND e.ts < date_trunc('minute', b.hi) + interval '1 minute' \
         AND date_trunc('minute', e.ts) < b.hi \
        JOIN signals s ON s.signal_id = e.signal_id \
        CROSS JOIN LATERAL (VALUES (s.normalised_ticker::text), ('*')) AS t(ticker) \
        GROUP BY 1, 2), \
     m AS (SELECT normalised_ticker::text AS ticker, period_start AS bucket, total_events AS events, \
                  total_signals AS signals, error_events AS errors, terminal_events AS terminal, \
                  processing_time_sum_us AS latency_us \
           FROM bounds b JOIN signal_metrics_summary ON period_type = 'minute' \
             AND period_start >= b.lo AND period_start < b.hi), \
     es AS (SELECT normalised_ticker::text AS ticker, period_start AS bucket, sum(events) AS errors \
            FROM bounds b JOIN signal_error_summary ON period_type = 'minute' \
              AND period_start >= b.lo AND period_start < b.hi \
            GROUP BY 1, 2), \
     compared AS ( \
        SELECT coalesce(r.ticker, m.ticker) AS ticker, coalesce(r.bucket, m.bucket) AS bucket, \
               (r.events, r.signals, r.errors, r.terminal, r.latency_us) \
                   IS DISTINCT FROM (m.events, m.signals, m.errors, m.terminal, m.latency_us) AS differs, \
               coalesce(r.errors, 0) AS raw_errors \
        FROM raw r FULL JOIN m ON m.ticker = r.ticker AND m.bucket = r.bucket), \
     judged AS ( \
        SELECT coalesce(c.ticker, es.ticker) AS ticker, coalesce(c.bucket, es.bucket) AS bucket \
        FROM compared c FULL JOIN es ON es.ticker = c.ticker AND es.bucket = c.bucket \
        WHERE coalesce(c.differs, false) \
           OR (coalesce(c.ticker, es.ticker) <> '*' \
               AND coalesce(c.raw_errors, 0) IS DISTINCT FROM coalesce(es.errors, 0))) \
     SELECT format('minute %s %s', j.ticker, \
                   to_char(j.bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) AS id, \
            count(*) OVER () AS total \
     FROM judged j \
     WHERE NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.bucket_minute = j.bucket \
                       AND (j.ticker = '*' OR d.normalised_ticker = j.ticker)) \
     ORDER BY 1 LIMIT $1";

fn finding(check: Check, rows: Vec<Row>) -> Finding {
    Finding {
        check,
        count: <[Row]>::first(&rows).map_or(0, |r| r.total),
        ids: rows.into_iter().map(|r| r.id).collect(),
    }
}

/// Runs every check; `stuck_after_us` is the stuck threshold in microseconds.
#[tracing::instrument(name = "SELECT data_quality", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "data_quality"))]
pub async fn check(
    conn: &mut AsyncPgConnection,
    stuck_after_us: i64,
    summary_from: DateTime<Utc>,
    summary_to: DateTime<Utc>,
    max_ids: i64,
) -> Result<Vec<Finding>, DbError> {
    let orphans = diesel::sql_query(ORPHANS)
        .bind::<BigInt, _>(max_ids)
        .load::<Row>(conn)
        .await?;
    let stuck = diesel::sql_query(STUCK)
        .bind::<BigInt, _>(max_ids)
        .bind::<Interval, _>(diesel::pg::data_types::PgInterval::from_microseconds(
            stuck_after_us,
        ))
        .load::<Row>(conn)
        .await?;
    let counters = diesel::sql_query(COUNTERS)
        .bind::<BigInt, _>(max_ids)
        .load::<Row>(conn)
        .await?;
    let summary = diesel::sql_query(SUMMARY)
        .bind::<BigInt, _>(max_ids)
        .bind::<Timestamptz, _>(summary_from)
        .bind::<Timestamptz, _>(summary_to)
        .load::<Row>(conn)
        .await?;
    Ok(vec![
        finding(Check::OrphanEvents, orphans),
        finding(Check::StuckSignals, stuck),
        finding(Check::CounterMismatch, counters),
        finding(Check::SummaryMismatch, summary),
    ])
}
