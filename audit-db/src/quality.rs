//! The data-quality checks: queries listing the ids at fault and how many
//! there are in all (orphans and counters share one, which walks the rows
//! both read once). Two users: the reader's `CheckDataQuality`
//! (on the replica, ids and all) and the writer's periodic `data_quality`
//! job (on the primary, counts for `audit_data_quality_findings`). Raw SQL:
//! anti-joins, grouped recounts and window counts. Run inside one
//! repeatable-read transaction, so the checks see one snapshot.
//!
//! Every check costs what its [`Window`] holds, never the whole history:
//! orphans and counters look only at the events in the window and at the
//! signals with an event in the window (by event time for the RPC and
//! `audit-admin check`, by `recorded_at` for the periodic job, which checks
//! what was written since its last run, late events included), or whose
//! latest event is stamped in it (`updated_at`, for either), the summary
//! check at the minutes of the window, and the stuck check at the stuck
//! signals themselves (through `signals_status_updated_idx`, one range per
//! non-terminal status).

use crate::DbError;
use audit_core::{SignalStatus, SignalStatusMapping};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Interval, Text, Timestamptz};
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

/// Which events (and so which signals) a window selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchedBy {
    /// Events stamped in the window (`ts`, partition-pruned).
    EventTime,
    /// Events written in the window (`recorded_at`), whatever their stamp.
    RecordedAt,
}

impl TouchedBy {
    fn column(self) -> &'static str {
        match self {
            TouchedBy::EventTime => "ts",
            TouchedBy::RecordedAt => "recorded_at",
        }
    }
}

/// What the orphan, counter and summary checks compare: the signals with
/// an event `touched_by` in [`from`, `to`) or an `updated_at` there (their
/// latest event's stamp), and the minute rollups starting
/// in [`from`, `to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub touched_by: TouchedBy,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// A row of [`orphans_and_counters`]: a [`Row`] and the check it is for.
#[derive(QueryableByName)]
struct KindRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(embed)]
    row: Row,
}

/// The signals with an event in the window (`$2`, `$3`; one index range
/// scan of `signal_events` by `column`), and those whose latest event is
/// stamped in it (`updated_at`, through `signals_updated_at_idx`). The
/// second half finds an id claim whose event is missing on a signal with no
/// other event in the window (its claim is stamped like its event, and the
/// missing event was the latest one, so the signal's `updated_at` is that
/// stamp); claims' own `ts` has no index, and one would be written by every
/// event insert.
fn touched(column: &str) -> String {
    format!(
        "touched AS (SELECT signal_id FROM signal_events \
                     WHERE {column} >= $2 AND {column} < $3 \
                     UNION \
                     SELECT signal_id FROM signals WHERE updated_at >= $2 AND updated_at < $3)"
    )
}

/// Orphans and counters in one walk, since both read the same rows: each
/// touched signal's id claims (through `signal_event_ids_signal_idx`) and
/// each claim's event by its stamp (one day partition, pruned per claim at
/// run time), never by the signal id alone, which probes every day
/// partition. Per signal the walk yields the claims without their event
/// (orphans) and the signal's counters recomputed from the events found (an
/// event without its claim is left out of the recount; the orphan check
/// reports it). Walked twice, once per check, the two took 445–648 ms for
/// an hour of 37 k events at 1 M events of history; once, 263–292 ms with
/// the events-without-claim half (BENCHMARKS.md).
///
/// Every read is a lateral kept parameterised by `OFFSET 0`: joined plainly,
/// the planner anti-joined every claim to every event, the whole history,
/// then kept the touched ones; as one grouped join it picked a nested loop
/// of every touched signal against every signal; with a plain join to
/// `signals` it recounted every signal before looking at the touched ones.
///
/// Only events in the window are checked for a claim: reaching every event
/// of a touched signal costs an index probe into every day partition (the
/// signal's events can be stamped any day), which grows with the history
/// (the periodic job at 10 M events: 26x its cost at 300 k). Windows tile
/// time, so every event is checked by the run whose window holds it, and a
/// `CheckDataQuality` over any range checks that range's events.
///
/// One row per finding kind and id, at most `$1` of each, each with the
/// kind's total (`kind` is 'orphan' or 'counter').
fn orphans_and_counters(touched_by: TouchedBy) -> String {
    let column = touched_by.column();
    format!(
        "WITH {}, \
         walked AS MATERIALIZED (SELECT * FROM ( \
            SELECT t.signal_id, r.missing, \
                   coalesce(s.error_count <> r.errors OR s.retry_count <> r.retries, false) AS counters_differ \
            FROM touched t \
            LEFT JOIN LATERAL (SELECT error_count, retry_count FROM signals \
                               WHERE signal_id = t.signal_id OFFSET 0) s ON true \
            CROSS JOIN LATERAL ( \
                SELECT array_agg(i.event_id) FILTER (WHERE e.found IS NULL) AS missing, \
                       count(*) FILTER (WHERE e.error_info IS NOT NULL OR e.http_status >= 400) AS errors, \
                       GREATEST(count(*) FILTER (WHERE e.event_type = 'processing') - 1, 0) \
                       + GREATEST(count(*) FILTER (WHERE e.event_type = 'forwarding') - 1, 0) AS retries \
                FROM signal_event_ids i \
                LEFT JOIN LATERAL (SELECT true AS found, e.event_type, e.error_info, e.http_status \
                                   FROM signal_events e \
                                   WHERE e.signal_id = i.signal_id AND e.ts = i.ts AND e.event_id = i.event_id \
                                   OFFSET 0) e ON true \
                WHERE i.signal_id = t.signal_id) r) w \
            WHERE w.missing IS NOT NULL OR w.counters_differ) \
         SELECT * FROM ( \
            SELECT 'orphan' AS kind, id, count(*) OVER () AS total FROM ( \
                SELECT unnest(w.missing)::text AS id FROM walked w \
                UNION ALL \
                SELECT e.event_id::text FROM signal_events e WHERE e.{column} >= $2 AND e.{column} < $3 \
                AND NOT EXISTS (SELECT 1 FROM signal_event_ids i WHERE i.event_id = e.event_id)) o \
            ORDER BY id LIMIT $1) orphans \
         UNION ALL \
         SELECT * FROM ( \
            SELECT 'counter' AS kind, w.signal_id::text AS id, count(*) OVER () AS total \
            FROM walked w WHERE w.counters_differ \
            ORDER BY 2 LIMIT $1) counters",
        touched(column)
    )
}

/// Signals in one of the statuses `$3` (the non-terminal ones) untouched
/// for `$2`. Bound as a `signal_status[]` (not `NOT
/// signal_status_is_terminal(…)`, nor a text array cast in SQL, which the
/// planner cannot estimate) so that the planner sees the values: one range
/// of `signals_status_updated_idx` per status, so the cost is the stuck
/// signals, not every signal.
const STUCK: &str = "SELECT signal_id::text AS id, count(*) OVER () AS total FROM signals \
     WHERE current_status = ANY ($3) AND updated_at < now() - $2 \
     ORDER BY updated_at LIMIT $1";

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

/// Runs every check over `window`; `stuck_after_us` is the stuck threshold
/// in microseconds.
#[tracing::instrument(name = "SELECT data_quality", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "data_quality"))]
pub async fn check(
    conn: &mut AsyncPgConnection,
    stuck_after_us: i64,
    window: Window,
    max_ids: i64,
) -> Result<Vec<Finding>, DbError> {
    let Window {
        touched_by,
        from,
        to,
    } = window;
    let (orphans, counters): (Vec<KindRow>, Vec<KindRow>) =
        diesel::sql_query(orphans_and_counters(touched_by))
            .bind::<BigInt, _>(max_ids)
            .bind::<Timestamptz, _>(from)
            .bind::<Timestamptz, _>(to)
            .load::<KindRow>(conn)
            .await?
            .into_iter()
            .partition(|r| r.kind == "orphan");
    let rows = |rows: Vec<KindRow>| -> Vec<Row> { rows.into_iter().map(|r| r.row).collect() };
    let stuck = diesel::sql_query(STUCK)
        .bind::<BigInt, _>(max_ids)
        .bind::<Interval, _>(diesel::pg::data_types::PgInterval::from_microseconds(
            stuck_after_us,
        ))
        .bind::<Array<SignalStatusMapping>, _>(
            SignalStatus::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .collect::<Vec<_>>(),
        )
        .load::<Row>(conn)
        .await?;
    let summary = diesel::sql_query(SUMMARY)
        .bind::<BigInt, _>(max_ids)
        .bind::<Timestamptz, _>(from)
        .bind::<Timestamptz, _>(to)
        .load::<Row>(conn)
        .await?;
    Ok(vec![
        finding(Check::OrphanEvents, rows(orphans)),
        finding(Check::StuckSignals, stuck),
        finding(Check::CounterMismatch, rows(counters)),
        finding(Check::SummaryMismatch, summary),
    ])
}
