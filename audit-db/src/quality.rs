//! The data-quality checks: queries listing the ids at fault and how many
//! there are in all (orphans and counters share one, which walks the rows
//! both read once), and their stored results. Raw SQL: anti-joins, grouped
//! recounts and window counts.
//!
//! Every check costs what its [`Window`] holds, never the whole history:
//! orphans and counters look only at the events stamped in the window and
//! at the signals with an event there or whose latest event is stamped there
//! (`updated_at`), the summary check at the minutes of the window, and the
//! stuck check at the stuck signals themselves (through
//! `signals_status_updated_idx`, one range per non-terminal status).
//!
//! Three users. `audit-admin check` runs [`check`] live on the primary. The
//! writer's quality job ([`verify`]) checks each minute once after the
//! rollup refresher rewrote it and stores the findings per minute
//! (migration `2026-12-07-000200_stored_quality`), at a cost proportional
//! to what changed. The reader's `CheckDataQuality` answers the minutes
//! checked since their last change from [`stored`] and checks the rest live
//! ([`live_ranges`], [`scan`]), then [`merge`]s the parts: an hour of a busy
//! day walked live took 4 s at 10 M events (BENCHMARKS.md).

use crate::DbError;
use audit_core::{SignalStatus, SignalStatusMapping};
use chrono::{DateTime, TimeDelta, Utc};
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

    /// The check whose [`as_str`](Self::as_str) label is `label`.
    pub fn from_label(label: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|check| check.as_str() == label)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub check: Check,
    pub count: i64,
    pub ids: Vec<String>,
}

/// What the orphan, counter and summary checks compare: the signals with
/// an event stamped in [`from`, `to`) or an `updated_at` there (their
/// latest event's stamp), the events stamped there, and the minute rollups
/// starting there (whole minutes: a window that starts or ends inside a
/// minute compares that whole minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    /// The minutes the finding is filed under when stored: those its signal
    /// was touched in, the event's, or the summary bucket's.
    #[diesel(sql_type = Array<Timestamptz>)]
    minutes: Vec<DateTime<Utc>>,
}

/// A row of [`orphans_and_counters`]: a [`Row`] and the check it is for.
#[derive(QueryableByName)]
struct KindRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(embed)]
    row: Row,
}

/// The signals with an event stamped in the window (`$2`, `$3`; one index
/// range scan of `signal_events`), and those whose latest event is stamped
/// in it (`updated_at`, through `signals_updated_at_idx`), each with the
/// minutes it was touched in. The second half finds an id claim whose
/// event is missing on a signal with no other event in the window (its
/// claim is stamped like its event, and the missing event was the latest
/// one, so the signal's `updated_at` is that stamp); claims' own `ts` has no
/// index, and one would be written by every event insert. Distinct pairs
/// first, then one array per signal: both hashed, where `array_agg(DISTINCT
/// …)` sorts every event of the window.
const TOUCHED: &str = "touched AS (SELECT signal_id, array_agg(minute) AS minutes FROM ( \
        SELECT DISTINCT signal_id, minute FROM ( \
            SELECT signal_id, date_trunc('minute', ts) AS minute FROM signal_events \
            WHERE ts >= $2 AND ts < $3 \
            UNION ALL \
            SELECT signal_id, date_trunc('minute', updated_at) FROM signals \
            WHERE updated_at >= $2 AND updated_at < $3) p) d \
     GROUP BY signal_id)";

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
/// kind's total (`kind` is 'orphan' or 'counter') and the minutes it is
/// filed under when stored.
fn orphans_and_counters() -> String {
    format!(
        "WITH {TOUCHED}, walked AS MATERIALIZED (SELECT * FROM ( \
        SELECT t.signal_id, t.minutes, r.missing, \
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
        SELECT 'orphan' AS kind, id, count(*) OVER () AS total, minutes FROM ( \
            SELECT unnest(w.missing)::text AS id, w.minutes FROM walked w \
            UNION ALL \
            SELECT e.event_id::text, ARRAY[date_trunc('minute', e.ts)] FROM signal_events e \
            WHERE e.ts >= $2 AND e.ts < $3 \
            AND NOT EXISTS (SELECT 1 FROM signal_event_ids i WHERE i.event_id = e.event_id)) o \
        ORDER BY id LIMIT $1) orphans \
     UNION ALL \
     SELECT * FROM ( \
        SELECT 'counter' AS kind, w.signal_id::text AS id, count(*) OVER () AS total, w.minutes \
        FROM walked w WHERE w.counters_differ \
        ORDER BY 2 LIMIT $1) counters"
    )
}

/// Signals in one of the statuses `$3` (the non-terminal ones) untouched
/// for `$2`. Bound as a `signal_status[]` (not `NOT
/// signal_status_is_terminal(…)`, nor a text array cast in SQL, which the
/// planner cannot estimate) so that the planner sees the values: one range
/// of `signals_status_updated_idx` per status, so the cost is the stuck
/// signals, not every signal.
const STUCK: &str = "SELECT signal_id::text AS id, count(*) OVER () AS total, \
     '{}'::timestamptz[] AS minutes FROM signals \
     WHERE current_status = ANY ($3) AND updated_at < now() - $2 \
     ORDER BY updated_at LIMIT $1";

/// Minute buckets starting in the range whose figures raw events do not
/// reproduce: the counts and latency sum of `signal_metrics_summary`
/// (coarser buckets are sums of these) and, per ticker, the failed-event
/// total of `signal_error_summary`.
///
/// Whole minutes on both sides, so a range that starts or ends inside a
/// minute compares that whole minute.
///
/// The events' range is written on the parameters, not joined from the
/// `bounds` CTE: behind the CTE the planner cannot see the values, guessed a
/// third of the day partition and, at 30 M events in a day, scanned the whole
/// partition for a one-minute window (4.8 s; by the ts index, 0.34 s).
/// Each event's signal is probed (a lateral kept parameterised by `OFFSET
/// 0`): with the guessed row count the planner hash-joined every signal, a
/// sequential scan of `signals` (1.0 s at 10 M events for a 30-second window, which
/// `CheckDataQuality` checks live at a range's start; 65 ms probed; an hour:
/// 1.7 s probed against 1.8 s hashed). Keys still queued in `rollup_dirty`
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
        FROM signal_events e \
        CROSS JOIN LATERAL (SELECT s.normalised_ticker, s.created_at FROM signals s \
                            WHERE s.signal_id = e.signal_id OFFSET 0) s \
        CROSS JOIN LATERAL (VALUES (s.normalised_ticker::text), ('*')) AS t(ticker) \
        WHERE e.ts >= date_trunc('minute', $2::timestamptz) \
          AND e.ts < date_trunc('minute', $3::timestamptz) + interval '1 minute' \
          AND date_trunc('minute', e.ts) < $3::timestamptz \
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
            count(*) OVER () AS total, ARRAY[j.bucket] AS minutes \
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

/// The orphans, counters and summary findings over `window` (the checks
/// whose cost is the window's data), at most `max_ids` ids each; in the
/// order of [`Check::ALL`] without stuck signals. In a rows-per-minute form
/// for [`verify`].
async fn scan_rows(
    conn: &mut AsyncPgConnection,
    window: Window,
    max_ids: i64,
) -> Result<[(Check, Vec<Row>); 3], DbError> {
    let (orphans, counters): (Vec<KindRow>, Vec<KindRow>) =
        diesel::sql_query(orphans_and_counters())
            .bind::<BigInt, _>(max_ids)
            .bind::<Timestamptz, _>(window.from)
            .bind::<Timestamptz, _>(window.to)
            .load::<KindRow>(conn)
            .await?
            .into_iter()
            .partition(|r| r.kind == "orphan");
    let rows = |rows: Vec<KindRow>| -> Vec<Row> { rows.into_iter().map(|r| r.row).collect() };
    let summary = diesel::sql_query(SUMMARY)
        .bind::<BigInt, _>(max_ids)
        .bind::<Timestamptz, _>(window.from)
        .bind::<Timestamptz, _>(window.to)
        .load::<Row>(conn)
        .await?;
    Ok([
        (Check::OrphanEvents, rows(orphans)),
        (Check::CounterMismatch, rows(counters)),
        (Check::SummaryMismatch, summary),
    ])
}

/// The orphans, counters and summary findings over `window`, checked live.
pub async fn scan(
    conn: &mut AsyncPgConnection,
    window: Window,
    max_ids: i64,
) -> Result<Vec<Finding>, DbError> {
    Ok(scan_rows(conn, window, max_ids)
        .await?
        .into_iter()
        .map(|(check, rows)| finding(check, rows))
        .collect())
}

/// Signals in a non-terminal status untouched for `stuck_after_us`
/// microseconds, oldest first.
pub async fn stuck(
    conn: &mut AsyncPgConnection,
    stuck_after_us: i64,
    max_ids: i64,
) -> Result<Finding, DbError> {
    let rows = diesel::sql_query(STUCK)
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
    Ok(finding(Check::StuckSignals, rows))
}

/// Runs every check live over `window`, in the order of [`Check::ALL`];
/// `stuck_after_us` is the stuck threshold in microseconds. Run it in one
/// repeatable-read transaction, so the checks see one snapshot.
#[tracing::instrument(name = "SELECT data_quality", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "data_quality"))]
pub async fn check(
    conn: &mut AsyncPgConnection,
    stuck_after_us: i64,
    window: Window,
    max_ids: i64,
) -> Result<Vec<Finding>, DbError> {
    let stuck = stuck(conn, stuck_after_us, max_ids).await?;
    let mut findings = scan(conn, window, max_ids).await?;
    findings.insert(1, stuck);
    Ok(findings)
}

/// The runs of consecutive minutes in `minutes` (sorted, distinct), as
/// windows: one walk each.
pub fn runs(minutes: &[DateTime<Utc>]) -> Vec<Window> {
    let mut runs: Vec<Window> = Vec::new();
    for &minute in minutes {
        match runs.last_mut() {
            Some(run) if run.to == minute => run.to = minute + MINUTE,
            _ => runs.push(Window {
                from: minute,
                to: minute + MINUTE,
            }),
        }
    }
    runs
}

/// What of `window` is left to check live once the `stored` minutes
/// (sorted, distinct, each wholly inside the window) are answered from
/// their stored findings: the gaps between them, the window's partial
/// minutes at either end included.
pub fn live_ranges(window: Window, stored: &[DateTime<Utc>]) -> Vec<Window> {
    let mut live = Vec::new();
    let mut at = window.from;
    for &minute in stored {
        if minute > at {
            live.push(Window {
                from: at,
                to: minute,
            });
        }
        at = at.max(minute + MINUTE);
    }
    if at < window.to {
        live.push(Window {
            from: at,
            to: window.to,
        });
    }
    live
}

/// One finding per check from several parts' findings of it (stored
/// minutes and live ranges): the ids' union, sorted, at most `max_ids`; the
/// count is the union's size plus what each part counted but did not list,
/// so it is exact when no part was cut at `max_ids`. Checks in the order
/// they first appear.
pub fn merge(parts: impl IntoIterator<Item = Finding>, max_ids: usize) -> Vec<Finding> {
    let mut merged: Vec<(Check, std::collections::BTreeSet<String>, i64)> = Vec::new();
    for part in parts {
        let unlisted = (part.count - part.ids.len() as i64).max(0);
        let at = match merged.iter().position(|(check, ..)| *check == part.check) {
            Some(at) => at,
            None => {
                merged.push((part.check, Default::default(), 0));
                merged.len() - 1
            }
        };
        let (_, ids, extra) = &mut merged[at];
        ids.extend(part.ids);
        *extra += unlisted;
    }
    merged
        .into_iter()
        .map(|(check, ids, extra)| Finding {
            check,
            count: ids.len() as i64 + extra,
            ids: ids.into_iter().take(max_ids).collect(),
        })
        .collect()
}

const MINUTE: TimeDelta = TimeDelta::minutes(1);

#[derive(QueryableByName)]
struct Minute {
    #[diesel(sql_type = Timestamptz)]
    bucket_minute: DateTime<Utc>,
}

/// Loads a query's `bucket_minute` column.
async fn load_minutes<Q>(
    conn: &mut AsyncPgConnection,
    query: Q,
) -> Result<Vec<DateTime<Utc>>, DbError>
where
    Q: diesel_async::methods::LoadQuery<'static, AsyncPgConnection, Minute> + Send + 'static,
{
    Ok(query
        .load::<Minute>(conn)
        .await?
        .into_iter()
        .map(|m| m.bucket_minute)
        .collect())
}

/// Takes up to `$2` queued minutes ended by `$1`, newest first (a
/// backlog, e.g. after a migration or a bulk load, reaches the recent hours
/// first). Their rows stay locked until the transaction ends: a refresher
/// queueing one of them again waits, then queues it anew.
const TAKE: &str = "DELETE FROM quality_dirty WHERE bucket_minute IN ( \
     SELECT bucket_minute FROM quality_dirty WHERE bucket_minute < date_trunc('minute', $1::timestamptz) \
     ORDER BY bucket_minute DESC LIMIT $2) \
     RETURNING bucket_minute";

/// Replaces the taken minutes' verification (their old findings go with
/// it, `ON DELETE CASCADE`).
const FORGET: &str = "DELETE FROM quality_minutes WHERE bucket_minute = ANY ($1)";
const MARK: &str = "INSERT INTO quality_minutes (bucket_minute, checked_at) \
     SELECT unnest($1::timestamptz[]), now()";
const FILE: &str = "INSERT INTO quality_findings (bucket_minute, kind, id) \
     SELECT DISTINCT * FROM unnest($1::timestamptz[], $2::text[], $3::text[])";

/// Verifications older than the retention horizon go: their events have
/// left, and a range reaching back there is checked live.
const EXPIRE: &str = "DELETE FROM quality_minutes \
     WHERE bucket_minute < (SELECT max(horizon) FROM retention_horizon)";

/// The writer's quality job: checks up to `budget` queued minutes ended by
/// `before` (the minute in progress is left for the next run) and
/// stores what each holds, replacing its previous verification; returns how
/// many minutes it checked. Run it in one transaction: the minutes are
/// taken from the queue and their findings stored together, so a failed run
/// leaves them queued. Each statement reads its own snapshot; the summary
/// check skips keys still queued for the refresher in the same snapshot,
/// and such a key brings its minute back to the queue when it is refreshed.
#[tracing::instrument(name = "VERIFY data_quality", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "VERIFY", db.collection.name = "quality_minutes"))]
pub async fn verify(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    budget: i64,
) -> Result<usize, DbError> {
    diesel::sql_query(EXPIRE).execute(conn).await?;
    let take = diesel::sql_query(TAKE)
        .bind::<Timestamptz, _>(before)
        .bind::<BigInt, _>(budget);
    let mut taken = load_minutes(conn, take).await?;
    if taken.is_empty() {
        return Ok(0);
    }
    taken.sort_unstable();
    let (mut at, mut kinds, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for run in runs(&taken) {
        for (check, rows) in scan_rows(conn, run, i64::MAX).await? {
            for row in rows {
                for minute in row.minutes {
                    if taken.binary_search(&minute).is_ok() {
                        at.push(minute);
                        kinds.push(check.as_str());
                        ids.push(row.id.clone());
                    }
                }
            }
        }
    }
    diesel::sql_query(FORGET)
        .bind::<Array<Timestamptz>, _>(&taken)
        .execute(conn)
        .await?;
    diesel::sql_query(MARK)
        .bind::<Array<Timestamptz>, _>(&taken)
        .execute(conn)
        .await?;
    if !at.is_empty() {
        diesel::sql_query(FILE)
            .bind::<Array<Timestamptz>, _>(&at)
            .bind::<Array<Text>, _>(&kinds)
            .bind::<Array<Text>, _>(&ids)
            .execute(conn)
            .await?;
    }
    Ok(taken.len())
}

/// The whole minutes of `$1`..`$2` answered without a live check: those
/// checked and unchanged since (not queued again, and no rollup key of
/// theirs waiting for the refresher, which would queue them), and those
/// without events (no minute rollup, nothing waiting): at low traffic most
/// minutes, each of which would otherwise be a live range of its own.
const FRESH: &str = "SELECT m AS bucket_minute \
     FROM generate_series(date_trunc('minute', $1::timestamptz - interval '1 microsecond') \
                              + interval '1 minute', \
                          date_trunc('minute', $2::timestamptz) - interval '1 minute', \
                          interval '1 minute') m \
     WHERE NOT EXISTS (SELECT 1 FROM quality_dirty d WHERE d.bucket_minute = m) \
     AND NOT EXISTS (SELECT 1 FROM rollup_dirty r WHERE r.bucket_minute = m) \
     AND (EXISTS (SELECT 1 FROM quality_minutes q WHERE q.bucket_minute = m) \
          OR NOT EXISTS (SELECT 1 FROM signal_metrics_summary s WHERE s.period_type = 'minute' \
                         AND s.period_start = m AND s.normalised_ticker = '*')) \
     ORDER BY 1";

/// The stored findings of the minutes `$1`, each id once, at most `$2` per
/// kind, with the kind's total.
const STORED: &str = "SELECT kind, id, total, '{}'::timestamptz[] AS minutes FROM ( \
     SELECT kind, id, count(*) OVER (PARTITION BY kind) AS total, \
            row_number() OVER (PARTITION BY kind ORDER BY id) AS n \
     FROM (SELECT DISTINCT kind, id FROM quality_findings WHERE bucket_minute = ANY ($1)) f) r \
     WHERE n <= $2";

/// What the stored verification answers of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The minutes answered (sorted); [`live_ranges`] gives the rest.
    pub minutes: Vec<DateTime<Utc>>,
    /// Their findings, one per check that has any.
    pub findings: Vec<Finding>,
}

/// The stored findings of the minutes of `window` checked since their last
/// change, at most `max_ids` ids per check.
pub async fn stored(
    conn: &mut AsyncPgConnection,
    window: Window,
    max_ids: i64,
) -> Result<Stored, DbError> {
    let fresh = diesel::sql_query(FRESH)
        .bind::<Timestamptz, _>(window.from)
        .bind::<Timestamptz, _>(window.to);
    let minutes = load_minutes(conn, fresh).await?;
    if minutes.is_empty() {
        return Ok(Stored {
            minutes,
            findings: Vec::new(),
        });
    }
    let rows = diesel::sql_query(STORED)
        .bind::<Array<Timestamptz>, _>(&minutes)
        .bind::<BigInt, _>(max_ids)
        .load::<KindRow>(conn)
        .await?;
    let mut findings: Vec<Finding> = Vec::new();
    for KindRow { kind, row } in rows {
        let Some(check) = Check::from_label(&kind) else {
            continue;
        };
        match findings.iter_mut().find(|f| f.check == check) {
            Some(f) => f.ids.push(row.id),
            None => findings.push(Finding {
                check,
                count: row.total,
                ids: vec![row.id],
            }),
        }
    }
    Ok(Stored { minutes, findings })
}

/// Stored findings by check over the minutes since `since` (each id once),
/// for the gauges; checks without any are left out.
pub async fn stored_counts(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<(Check, i64)>, DbError> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    Ok(diesel::sql_query(
        "SELECT kind, count(DISTINCT id) AS n FROM quality_findings \
         WHERE bucket_minute >= $1 GROUP BY kind",
    )
    .bind::<Timestamptz, _>(since)
    .load::<Count>(conn)
    .await?
    .into_iter()
    .filter_map(|c| Check::from_label(&c.kind).map(|check| (check, c.n)))
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, s).unwrap()
    }

    fn w(from: DateTime<Utc>, to: DateTime<Utc>) -> Window {
        Window { from, to }
    }

    fn f(check: Check, count: i64, ids: &[&str]) -> Finding {
        Finding {
            check,
            count,
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn runs_join_consecutive_minutes_only() {
        let minutes = [at(10, 0, 0), at(10, 1, 0), at(10, 2, 0), at(10, 5, 0)];
        assert_eq!(
            runs(&minutes),
            vec![w(at(10, 0, 0), at(10, 3, 0)), w(at(10, 5, 0), at(10, 6, 0))]
        );
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn live_ranges_are_the_gaps_and_the_partial_ends() {
        let window = w(at(10, 0, 30), at(10, 6, 15));
        let stored = [at(10, 1, 0), at(10, 2, 0), at(10, 4, 0)];
        assert_eq!(
            live_ranges(window, &stored),
            vec![
                w(at(10, 0, 30), at(10, 1, 0)),
                w(at(10, 3, 0), at(10, 4, 0)),
                w(at(10, 5, 0), at(10, 6, 15)),
            ]
        );
        // Nothing stored: the whole window; everything stored: nothing.
        assert_eq!(live_ranges(window, &[]), vec![window]);
        let aligned = w(at(10, 0, 0), at(10, 2, 0));
        assert!(live_ranges(aligned, &[at(10, 0, 0), at(10, 1, 0)]).is_empty());
    }

    #[test]
    fn merge_counts_each_id_once_and_keeps_what_parts_did_not_list() {
        let merged = merge(
            [
                f(Check::OrphanEvents, 2, &["b", "a"]),
                f(Check::CounterMismatch, 0, &[]),
                f(Check::OrphanEvents, 2, &["c", "b"]),
                // Counted 5, listed 2: three more than the ids say.
                f(Check::CounterMismatch, 5, &["x", "y"]),
            ],
            2,
        );
        assert_eq!(
            merged,
            vec![
                f(Check::OrphanEvents, 3, &["a", "b"]),
                f(Check::CounterMismatch, 5, &["x", "y"]),
            ]
        );
    }
}
