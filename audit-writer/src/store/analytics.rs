//! Keeps the hourly analytics tables (`stage_latency_hourly`,
//! `stage_latency_hourly_by_ticker`, `ticker_activity_hourly`) exact, at a
//! cost proportional to what changed (see the migrations
//! `2026-12-03-000100_incremental_analytics` and
//! `2026-12-06-000200_minute_analytics` for the design). Runs on the
//! primary, from the writer.
//!
//! One pass, one transaction: take the minute keys the rollup refresher
//! handed over in `analytics_dirty`, find which minutes they affect (the
//! events' own minutes, the minutes of their successors in each signal's
//! timeline, and the `created_at` minutes of their signals), rebuild
//! exactly those (minute, ticker) rows of the minute tables from raw rows,
//! then each affected (hour, ticker) by summing its minute rows. A pass
//! reads the traffic of the minutes it rebuilds and at most 60 minute rows
//! per hour and combination, never the whole hour's events or the history.
//!
//! Why whole minutes rather than deltas: a transition's latency depends on
//! its neighbours and a signal's activity on its latest state, neither of
//! which can be updated by adding a row's contribution; recomputing a
//! (minute, ticker) is idempotent and exact. Why minutes under hours: a
//! pass late in a busy hour used to re-read the whole hour's events (18.6 s
//! at minute 9 at 500 signals/s, BENCHMARKS.md); the hours are what the
//! readers merge.

use audit_db::{DbError, PgPool};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// Serialises analytics passes (two writer replicas, a test, the bench):
/// an older snapshot must not overwrite a newer one after its keys were
/// taken. Distinct from the rollup refresher's lock, so the two never wait
/// on each other.
const REFRESH_LOCK: i64 = 0x5167_6e61_6c41_6e61;

/// The first pass after a migration builds the tables from the whole
/// history (every key is dirty then); later passes take milliseconds to
/// seconds. This bounds that first pass instead of the pool's timeout.
const REFRESH_TIMEOUT: &str = "15min";

/// Sort memory of a pass: a minute's timelines at a few thousand signals a
/// second sort in memory (tens of MB), on the one connection a pass uses.
const PASS_WORK_MEM: &str = "64MB";

/// Which minutes the dirty minutes affect. `keyed`: the events in the dirty
/// minutes whose ticker (carried by each event) is the key's (one index
/// range scan per run of consecutive minutes: see rollups.rs `keyed_events`
/// for the plans this avoids). A
/// transition is filed under its later event's minute, so a late event also
/// changes the minute of the event that follows it in its signal's
/// timeline: the earliest later time among the signal's id claims (one
/// probe of the unpartitioned claims; probing `signal_events` touched every
/// partition from the event's day on, the premade future days included).
/// An event at the same instant (a later sequence) lies in the event's own
/// minute, already affected. A signal's activity row is the minute of its
/// `created_at`: one probe of `signals` per distinct signal, not per event.
const AFFECTED_MINUTES: &str = "
WITH keys AS (
    SELECT DISTINCT bucket, ticker FROM unnest($1::timestamptz[], $2::text[]) AS k(bucket, ticker)
), runs AS (
    SELECT min(bucket) AS lo, max(bucket) + interval '1 minute' AS hi
    FROM (SELECT bucket, bucket - row_number() OVER (ORDER BY bucket) * interval '1 minute' AS island
          FROM (SELECT DISTINCT bucket FROM keys) d) t
    GROUP BY island
), keyed AS (
    SELECT e.signal_id, e.ts, k.ticker
    FROM runs r
    CROSS JOIN LATERAL (
        SELECT e.signal_id, e.ts, e.normalised_ticker
        FROM signal_events e
        WHERE e.ts >= r.lo AND e.ts < r.hi OFFSET 0) e
    JOIN keys k ON k.bucket = date_trunc('minute', e.ts) AND k.ticker = e.normalised_ticker
)
SELECT 'stage' AS kind, date_trunc('minute', ts) AS at, ticker FROM keyed
UNION
SELECT 'stage', date_trunc('minute', n.ts), k.ticker
FROM keyed k CROSS JOIN LATERAL (
    SELECT min(c.ts) AS ts FROM signal_event_ids c WHERE c.signal_id = k.signal_id AND c.ts > k.ts) n
WHERE n.ts IS NOT NULL
UNION
SELECT 'activity', date_trunc('minute', s.created_at), d.ticker
FROM (SELECT DISTINCT signal_id, ticker FROM keyed) d
CROSS JOIN LATERAL (SELECT created_at FROM signals WHERE signal_id = d.signal_id OFFSET 0) s";

/// The bound (`unit`, ticker) keys, `$1`/`$2`, as columns `unit` and `ticker`.
fn keys(unit: &str) -> String {
    format!(
        "SELECT DISTINCT {unit}, ticker FROM unnest($1::timestamptz[], $2::text[]) AS k({unit}, ticker)"
    )
}

/// Rebuilds the per-worker stage rows of the minute keys: lag() over the
/// whole timeline of every signal with an event in a key's minute (the old
/// view's definition), keeping the transitions whose later event lies in a
/// key. Each timeline is read within its signal's time span, taken from the
/// id claims (`signal_event_ids`: every stored event has one; one probe,
/// not partitioned), so the read prunes to the partitions that hold it: a
/// join on the signal id alone merged every partition's index, the whole
/// table, on every pass (BENCHMARKS.md, Soak). `OFFSET 0` keeps PostgreSQL
/// from flattening the lateral reads back into such joins. The tickers are
/// the events' own: `signals` is not read.
fn stage_minutes_from_events() -> String {
    format!(
        "WITH keys AS ({keys}), runs AS (
    SELECT min(minute) AS lo, max(minute) + interval '1 minute' AS hi
    FROM (SELECT minute, minute - row_number() OVER (ORDER BY minute) * interval '1 minute' AS island
          FROM (SELECT DISTINCT minute FROM keys) d) t
    GROUP BY island
), sig AS (
    SELECT DISTINCT e.signal_id, k.ticker
    FROM runs r
    CROSS JOIN LATERAL (
        SELECT e.signal_id, e.ts, e.normalised_ticker
        FROM signal_events e
        WHERE e.ts >= r.lo AND e.ts < r.hi OFFSET 0) e
    JOIN keys k ON k.minute = date_trunc('minute', e.ts) AND k.ticker = e.normalised_ticker
), span AS (
    SELECT sig.signal_id, sig.ticker, min(c.ts) AS lo, max(c.ts) AS hi
    FROM sig JOIN signal_event_ids c ON c.signal_id = sig.signal_id
    GROUP BY 1, 2
), timeline AS (
    SELECT span.ticker, e.ts, COALESCE(lag(e.worker_id) OVER w, '') AS worker_id,
           lag(e.event_type) OVER w AS from_stage, e.event_type AS to_stage,
           (extract(epoch FROM e.ts - lag(e.ts) OVER w) * 1000000)::bigint AS us
    FROM span CROSS JOIN LATERAL (
        SELECT signal_id, ts, sequence, worker_id, event_type FROM signal_events
        WHERE signal_id = span.signal_id AND ts >= span.lo AND ts <= span.hi OFFSET 0) e
    WINDOW w AS (PARTITION BY e.signal_id ORDER BY e.ts, e.sequence)
), buckets AS (
    SELECT k.minute, t.ticker, t.worker_id, t.from_stage, t.to_stage, latency_bucket(t.us) AS bucket,
           count(*) AS n, sum(t.us) AS sum_us, max(t.us) AS max_us
    FROM timeline t JOIN keys k ON k.minute = date_trunc('minute', t.ts) AND k.ticker = t.ticker
    WHERE t.from_stage IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6
)
INSERT INTO stage_latency_minutely (minute, normalised_ticker, worker_id, from_stage, to_stage,
    transitions, latency_sum_us, latency_max_us, latency_histogram)
SELECT minute, ticker, worker_id, from_stage::text, to_stage::text, sum(n)::bigint, sum(sum_us)::bigint,
       max(max_us)::bigint, jsonb_object_agg(bucket, n)
FROM buckets GROUP BY 1, 2, 3, 4, 5",
        keys = keys("minute")
    )
}

/// Sums stage rows of `src` (a query yielding the `group` columns, hour and
/// ticker first, then the figures) per `group` into `table` (`columns`:
/// the same keys by the table's names); histograms merged as a set (every
/// row's buckets expanded, summed).
fn stages_merge(src: &str, table: &str, columns: &str, group: &str) -> String {
    format!(
        "WITH src AS ({src}), totals AS (
    SELECT {group}, sum(transitions)::bigint AS transitions,
           sum(latency_sum_us)::bigint AS latency_sum_us, max(latency_max_us)::bigint AS latency_max_us
    FROM src GROUP BY {group}
), hist AS (
    SELECT {group}, jsonb_object_agg(b, n) AS latency_histogram
    FROM (SELECT {group}, j.key AS b, sum(j.value::bigint) AS n
          FROM src, jsonb_each_text(src.latency_histogram) AS j
          GROUP BY {group}, j.key) t
    GROUP BY {group}
)
INSERT INTO {table} ({columns}, transitions, latency_sum_us, latency_max_us, latency_histogram)
SELECT {group}, t.transitions, t.latency_sum_us, t.latency_max_us, h.latency_histogram
FROM totals t JOIN hist h USING ({group})"
    )
}

/// The hour keys' per-worker rows, from their minute rows: each key's hour
/// read as one range of the minute table's primary key (`OFFSET 0`; joined
/// plainly, PostgreSQL hashed the keys and scanned the whole minute table,
/// the history, on every pass: 0.3 s a pass at 1 M events and growing).
fn stage_hours_from_minutes() -> String {
    stages_merge(
        &format!(
            "SELECT k.hour, m.normalised_ticker AS ticker, m.worker_id, m.from_stage, m.to_stage, \
                    m.transitions, m.latency_sum_us, m.latency_max_us, m.latency_histogram \
             FROM ({keys}) k CROSS JOIN LATERAL ( \
                 SELECT * FROM stage_latency_minutely m WHERE m.minute >= k.hour \
                    AND m.minute < k.hour + interval '1 hour' AND m.normalised_ticker = k.ticker \
                 OFFSET 0) m",
            keys = keys("hour")
        ),
        "stage_latency_hourly",
        "hour, normalised_ticker, worker_id, from_stage, to_stage",
        "hour, ticker, worker_id, from_stage, to_stage",
    )
}

/// The hour keys' per-ticker rows, from their per-worker rows.
fn stages_by_ticker() -> String {
    stages_merge(
        &format!(
            "SELECT m.hour, m.normalised_ticker AS ticker, m.from_stage, m.to_stage, m.transitions, \
                    m.latency_sum_us, m.latency_max_us, m.latency_histogram \
             FROM ({keys}) k JOIN stage_latency_hourly m \
               ON m.hour = k.hour AND m.normalised_ticker = k.ticker",
            keys = keys("hour")
        ),
        "stage_latency_hourly_by_ticker",
        "hour, normalised_ticker, from_stage, to_stage",
        "hour, ticker, from_stage, to_stage",
    )
}

/// The '*' rows of the hour keys' hours, from every ticker's rows of the hour.
fn stages_all_tickers() -> String {
    stages_merge(
        &format!(
            "SELECT m.hour, '*' AS ticker, m.from_stage, m.to_stage, m.transitions, m.latency_sum_us, \
                    m.latency_max_us, m.latency_histogram \
             FROM (SELECT DISTINCT hour FROM ({keys}) k) k JOIN stage_latency_hourly_by_ticker m \
               ON m.hour = k.hour AND m.normalised_ticker <> '*'",
            keys = keys("hour")
        ),
        "stage_latency_hourly_by_ticker",
        "hour, normalised_ticker, from_stage, to_stage",
        "hour, ticker, from_stage, to_stage",
    )
}

/// Rebuilds the minute keys' activity rows from the signals created in
/// them, one range of `signals_normalised_ticker_created_idx` per key
/// (`OFFSET 0`: joined plainly, PostgreSQL hashed the keys and scanned all
/// of `signals` on every pass).
fn activity_minutes_from_signals() -> String {
    format!(
        "WITH keys AS ({keys}), sig AS (
    SELECT k.minute, k.ticker, s.current_status, s.error_count, s.retry_count,
           (extract(epoch FROM s.total_processing_time) * 1000000)::bigint AS us
    FROM keys k CROSS JOIN LATERAL (
        SELECT current_status, error_count, retry_count, total_processing_time FROM signals s
        WHERE s.normalised_ticker = k.ticker
          AND s.created_at >= k.minute AND s.created_at < k.minute + interval '1 minute'
        OFFSET 0) s
), hist AS (
    SELECT minute, ticker, jsonb_object_agg(b, n) AS h
    FROM (SELECT minute, ticker, latency_bucket(us) AS b, count(*) AS n
          FROM sig WHERE us IS NOT NULL GROUP BY 1, 2, 3) t
    GROUP BY 1, 2
), agg AS (
    SELECT minute, ticker, count(*) AS signals,
           count(*) FILTER (WHERE current_status = 'forwarded_success') AS succeeded,
           count(*) FILTER (WHERE current_status IN ('rejected', 'discarded')) AS rejected,
           count(*) FILTER (WHERE current_status IN ('forwarded_timeout', 'forwarded_http_error',
                                                     'forwarded_generic_error', 'error')) AS failed,
           count(*) FILTER (WHERE NOT signal_status_is_terminal(current_status)) AS in_flight,
           COALESCE(sum(error_count), 0)::bigint AS errors,
           COALESCE(sum(retry_count), 0)::bigint AS retries,
           count(us) AS processing_count,
           COALESCE(sum(us), 0)::bigint AS processing_sum_us
    FROM sig GROUP BY 1, 2
)
INSERT INTO ticker_activity_minutely (minute, normalised_ticker, signals, succeeded, rejected, failed,
    in_flight, errors, retries, processing_count, processing_sum_us, processing_histogram)
SELECT a.minute, a.ticker, a.signals, a.succeeded, a.rejected, a.failed, a.in_flight, a.errors,
       a.retries, a.processing_count, a.processing_sum_us, COALESCE(h.h, '{{}}')
FROM agg a LEFT JOIN hist h USING (minute, ticker)",
        keys = keys("minute")
    )
}

/// The hour keys' activity rows, summed from their minute rows (one primary
/// key range per key, as in [`stage_hours_from_minutes`]).
fn activity_hours_from_minutes() -> String {
    format!(
        "WITH keys AS ({keys}), src AS (
    SELECT k.hour, k.ticker, m.*
    FROM keys k CROSS JOIN LATERAL (
        SELECT * FROM ticker_activity_minutely m WHERE m.minute >= k.hour
           AND m.minute < k.hour + interval '1 hour' AND m.normalised_ticker = k.ticker
        OFFSET 0) m
), hist AS (
    SELECT hour, ticker, jsonb_object_agg(b, n) AS h
    FROM (SELECT hour, ticker, j.key AS b, sum(j.value::bigint) AS n
          FROM src, jsonb_each_text(src.processing_histogram) AS j GROUP BY 1, 2, 3) t
    GROUP BY 1, 2
), agg AS (
    SELECT hour, ticker, sum(signals)::bigint AS signals, sum(succeeded)::bigint AS succeeded,
           sum(rejected)::bigint AS rejected, sum(failed)::bigint AS failed,
           sum(in_flight)::bigint AS in_flight, sum(errors)::bigint AS errors,
           sum(retries)::bigint AS retries, sum(processing_count)::bigint AS processing_count,
           sum(processing_sum_us)::bigint AS processing_sum_us
    FROM src GROUP BY 1, 2
)
INSERT INTO ticker_activity_hourly (hour, normalised_ticker, signals, succeeded, rejected, failed,
    in_flight, errors, retries, processing_count, processing_sum_us, processing_histogram)
SELECT a.hour, a.ticker, a.signals, a.succeeded, a.rejected, a.failed, a.in_flight, a.errors,
       a.retries, a.processing_count, a.processing_sum_us, COALESCE(h.h, '{{}}')
FROM agg a LEFT JOIN hist h USING (hour, ticker)",
        keys = keys("hour")
    )
}

/// Drops `table`'s rows of the keys (its `unit` column = the key's time,
/// `normalised_ticker` = the key's ticker), so that a combination that no
/// longer occurs does not linger.
fn clear(table: &str, unit: &str) -> String {
    format!(
        "DELETE FROM {table} m USING ({keys}) k \
         WHERE m.{unit} = k.{unit} AND m.normalised_ticker = k.ticker",
        keys = keys(unit)
    )
}

/// Drops the '*' rows of the hour keys' hours.
fn clear_all_tickers() -> String {
    format!(
        "DELETE FROM stage_latency_hourly_by_ticker m \
         WHERE m.normalised_ticker = '*' AND m.hour IN (SELECT hour FROM ({keys}) k)",
        keys = keys("hour")
    )
}

#[derive(QueryableByName)]
struct DirtyKey {
    #[diesel(sql_type = Timestamptz)]
    bucket_minute: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    normalised_ticker: String,
}

#[derive(QueryableByName)]
struct Affected {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    ticker: String,
}

#[derive(QueryableByName)]
struct Horizon {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    horizon: Option<DateTime<Utc>>,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Dirty minute keys taken.
    pub minutes: usize,
    /// (minute, ticker) stage-latency rows rebuilt from raw events.
    pub stage_minutes: usize,
    /// (hour, ticker) stage-latency rows rebuilt from their minutes.
    pub stage_hours: usize,
    /// (minute, ticker) activity rows rebuilt from signals.
    pub activity_minutes: usize,
    /// (hour, ticker) activity rows rebuilt from their minutes.
    pub activity_hours: usize,
}

/// The distinct (hour, ticker) keys of (minute, ticker) keys.
fn hours_of(minutes: &[DateTime<Utc>], tickers: &[String]) -> (Vec<DateTime<Utc>>, Vec<String>) {
    let mut hours: Vec<(DateTime<Utc>, String)> = minutes
        .iter()
        .zip(tickers)
        .map(|(m, t)| {
            let hour = m.duration_trunc(TimeDelta::hours(1)).unwrap_or(*m);
            (hour, t.clone())
        })
        .collect();
    hours.sort_unstable();
    hours.dedup();
    hours.into_iter().unzip()
}

/// Which dirty minutes a pass takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Minutes {
    /// Every dirty minute, the one still being written included: tests,
    /// benches, a catch-up that must see everything.
    All,
    /// Only minutes that ended before the pass began, by the database's
    /// clock: the writer's schedule. A pass that took the current minute
    /// read it again in the next pass (every event of a minute rebuilt
    /// twice; BENCHMARKS.md, Soak); the answers lag by at most one minute
    /// more, and say so in `as_of`.
    Closed,
}

impl Minutes {
    fn take(self) -> &'static str {
        match self {
            Self::All => "DELETE FROM analytics_dirty RETURNING bucket_minute, normalised_ticker",
            Self::Closed => {
                "DELETE FROM analytics_dirty WHERE bucket_minute < date_trunc('minute', now()) \
                 RETURNING bucket_minute, normalised_ticker"
            }
        }
    }

    /// The `as_of` the pass gives the tables: never earlier than a previous
    /// pass's (an `All` pass may have run within the current minute).
    fn as_of(self) -> &'static str {
        match self {
            Self::All => "UPDATE analytics_state SET refreshed_at = GREATEST(refreshed_at, now())",
            Self::Closed => {
                "UPDATE analytics_state \
                 SET refreshed_at = GREATEST(refreshed_at, date_trunc('minute', now()))"
            }
        }
    }
}

/// Brings every affected hour up to date, in one transaction (readers never
/// see half a pass), and records up to when in `analytics_state`.
#[tracing::instrument(name = "REFRESH analytics", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "REFRESH", db.collection.name = "stage_latency_hourly ticker_activity_hourly"))]
pub async fn refresh(pool: &PgPool, minutes: Minutes) -> Result<Refreshed, DbError> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, DbError, _>(async |conn| refresh_in(conn, minutes).await)
        .await
}

async fn refresh_in(conn: &mut AsyncPgConnection, take: Minutes) -> Result<Refreshed, DbError> {
    diesel::sql_query(format!("SET LOCAL statement_timeout = '{REFRESH_TIMEOUT}'"))
        .execute(conn)
        .await?;
    // Its sorts of a few minutes' timelines spilled to disk at the default
    // 4 MB (BENCHMARKS.md, Soak). (No JIT: every pool turns it off.)
    diesel::sql_query(format!("SET LOCAL work_mem = '{PASS_WORK_MEM}'"))
        .execute(conn)
        .await?;
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(REFRESH_LOCK)
        .execute(conn)
        .await?;
    let mut keys: Vec<(DateTime<Utc>, String)> = diesel::sql_query(take.take())
        .load::<DirtyKey>(conn)
        .await?
        .into_iter()
        .map(|k| (k.bucket_minute, k.normalised_ticker))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut done = Refreshed {
        minutes: keys.len(),
        ..Refreshed::default()
    };
    if !keys.is_empty() {
        let (minutes, tickers): (Vec<DateTime<Utc>>, Vec<String>) = keys.into_iter().unzip();
        let affected: Vec<Affected> = diesel::sql_query(AFFECTED_MINUTES)
            .bind::<Array<Timestamptz>, _>(&minutes)
            .bind::<Array<Text>, _>(&tickers)
            .load(conn)
            .await?;
        // Minutes (and so hours: horizons are midnights) older than the
        // retention horizon are never rebuilt: their raw rows or minute rows
        // have left (or are leaving), and the stored figures are the only
        // correct ones (a late event must not shrink them).
        let horizon: Horizon =
            diesel::sql_query("SELECT max(horizon) AS horizon FROM retention_horizon")
                .get_result(conn)
                .await?;
        let kept = |kind: &str| -> (Vec<DateTime<Utc>>, Vec<String>) {
            affected
                .iter()
                .filter(|a| a.kind == kind && horizon.horizon.is_none_or(|h| a.at >= h))
                .map(|a| (a.at, a.ticker.clone()))
                .unzip()
        };
        let (stage_minutes, stage_tickers) = kept("stage");
        let (activity_minutes, activity_tickers) = kept("activity");
        let run = async |conn: &mut AsyncPgConnection,
                         sql: String,
                         times: &Vec<DateTime<Utc>>,
                         tickers: &Vec<String>| {
            diesel::sql_query(sql)
                .bind::<Array<Timestamptz>, _>(times)
                .bind::<Array<Text>, _>(tickers)
                .execute(conn)
                .await
        };
        if !stage_minutes.is_empty() {
            let (m, t) = (&stage_minutes, &stage_tickers);
            run(conn, clear("stage_latency_minutely", "minute"), m, t).await?;
            run(conn, stage_minutes_from_events(), m, t).await?;
            let (hours, hour_tickers) = hours_of(m, t);
            let (h, t) = (&hours, &hour_tickers);
            run(conn, clear("stage_latency_hourly", "hour"), h, t).await?;
            run(conn, stage_hours_from_minutes(), h, t).await?;
            run(conn, clear("stage_latency_hourly_by_ticker", "hour"), h, t).await?;
            run(conn, stages_by_ticker(), h, t).await?;
            run(conn, clear_all_tickers(), h, t).await?;
            run(conn, stages_all_tickers(), h, t).await?;
            done.stage_minutes = stage_minutes.len();
            done.stage_hours = hours.len();
        }
        if !activity_minutes.is_empty() {
            let (m, t) = (&activity_minutes, &activity_tickers);
            run(conn, clear("ticker_activity_minutely", "minute"), m, t).await?;
            run(conn, activity_minutes_from_signals(), m, t).await?;
            let (hours, hour_tickers) = hours_of(m, t);
            let (h, t) = (&hours, &hour_tickers);
            run(conn, clear("ticker_activity_hourly", "hour"), h, t).await?;
            run(conn, activity_hours_from_minutes(), h, t).await?;
            done.activity_minutes = activity_minutes.len();
            done.activity_hours = hours.len();
        }
    }
    diesel::sql_query(take.as_of()).execute(conn).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn minutes_map_to_their_utc_hours_once_per_ticker() {
        let at = |h, m| Utc.with_ymd_and_hms(2026, 12, 6, h, m, 0).unwrap();
        let minutes = [at(10, 0), at(10, 59), at(11, 0), at(10, 30), at(10, 30)];
        let tickers = ["A", "A", "A", "B", "A"].map(String::from);
        let (hours, by) = hours_of(&minutes, &tickers);
        assert_eq!(hours, [at(10, 0), at(10, 0), at(11, 0)]);
        assert_eq!(by, ["A", "B", "A"]);
    }
}
