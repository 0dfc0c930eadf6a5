//! The live tail of events on the replica, in commit order.
//!
//! A standby cannot LISTEN, and `sequence` is assigned at INSERT, not at
//! COMMIT, so polling `sequence > last` would skip an event whose
//! transaction committed after a later-numbered one. The tail is ordered by
//! (commit timestamp, sequence) instead — `pg_xact_commit_timestamp(xmin)`,
//! which needs `track_commit_timestamp = on` — and only delivers commits up
//! to a horizon the replica is sure of: 50 ms before the last replayed
//! commit (concurrent commits can reach the WAL in a slightly different
//! order than their timestamps), or the last replayed commit itself once the
//! replica has been idle and caught up for a second.
//!
//! Finding the new commits: a commit timestamp cannot be indexed, and
//! `recorded_at` (transaction start) only bounds it from below by the
//! longest transaction, so a scan by `recorded_at` has to re-read a whole
//! lookback on every poll, whatever it delivers. Each event carries its
//! transaction's id instead (`xact_id`, indexed), and a tail keeps a
//! *floor*: every event it has not delivered yet, committed or not, has
//! `xact_id >= floor`. After a poll the floor becomes the least of the
//! replica snapshot's xmin (a transaction the replica has not seen commit
//! has an id at least that), the ids of the events seen but held back (past
//! the horizon or the batch), and the end of the scan. A poll reads the
//! events from the floor up in id order, at most `scan` of them, so its
//! cost follows what it delivers plus the transactions still in flight.
//! When the scan is cut at `scan` rows, a transaction with a higher id
//! started after the last scanned one (whose `recorded_at` is its start),
//! so only commits before that start are delivered.
//!
//! A floor held back by a long-running write transaction on the primary
//! (its id stays the snapshot's xmin) makes each poll re-read the events
//! written since that transaction started, until it ends.
//!
//! Events whose `recorded_at` is more than [`LOOKBACK`] older than the
//! position (audit-admin import and restore write the original times) are
//! not tail events, as before. A resume token from before the floor existed
//! is read once by `recorded_at` over that lookback. Raw SQL: system
//! column and replication and snapshot functions.

use audit_db::models::EventRow;
use audit_db::{DbError, PgPool};
use audit_wire::token::TailPosition;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

/// The lookback, in the SQL below as `interval '10 minutes'`: events
/// recorded longer than this before the position are not tail events.
pub const LOOKBACK: &str = "10 minutes";

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct TailEvent {
    #[diesel(embed)]
    pub event: EventRow,
    #[diesel(sql_type = Text)]
    pub normalised_ticker: String,
    #[diesel(sql_type = Timestamptz)]
    pub committed_at: DateTime<Utc>,
    /// The floor after this poll (the same on every row of a batch).
    #[diesel(sql_type = BigInt)]
    pub next_floor: i64,
    /// The scan was cut at its limit: there may be more to deliver.
    #[diesel(sql_type = Bool)]
    pub scan_full: bool,
}

/// A poll that delivered nothing: the floor after it, and whether the scan
/// was cut at its limit (then a larger scan is needed to get further).
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Idle {
    #[diesel(sql_type = BigInt)]
    pub next_floor: i64,
    #[diesel(sql_type = Bool)]
    pub scan_full: bool,
}

#[derive(QueryableByName)]
struct Start {
    #[diesel(sql_type = Timestamptz)]
    committed_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    floor: i64,
}

/// A position before every event committed from now on. Every commit the
/// snapshot sees is at or before the clock read after it (or, on a replica,
/// the last replayed commit); every other transaction's id is at least the
/// snapshot's xmin.
#[tracing::instrument(name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn start_position(pool: &PgPool) -> Result<TailPosition, DbError> {
    let mut conn = pool.get().await?;
    let start: Start = diesel::sql_query(
        "SELECT greatest(clock_timestamp(), pg_last_xact_replay_timestamp()) AS committed_at, \
                pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS floor",
    )
    .get_result(&mut conn)
    .await?;
    Ok(TailPosition {
        committed_at: start.committed_at,
        sequence: i64::MAX,
        floor: Some(start.floor),
    })
}

/// The common part: $1/$2 the position, $3 ticker ('' for all), $4 event
/// types (empty for all), $5 the batch, $6 the floor (NULL: scan by
/// recorded_at), $7 the scan limit.
macro_rules! tail_ctes {
    ($scan:literal) => {
        concat!(
            "WITH horizon AS ( \
                 SELECT CASE WHEN NOT pg_is_in_recovery() THEN now() - interval '50 milliseconds' \
                             WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
                              AND now() - pg_last_xact_replay_timestamp() > interval '1 second' \
                             THEN pg_last_xact_replay_timestamp() \
                             ELSE pg_last_xact_replay_timestamp() - interval '50 milliseconds' END AS h), \
             snap AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin), \
             scanned AS MATERIALIZED ( \
                 SELECT e.sequence, e.event_id, e.signal_id, e.ts, e.event_type, e.location, \
                        e.worker_id, e.details, e.error_info, e.http_status, e.response_data, \
                        e.recorded_at, e.recorded_by, e.xact_id, \
                        pg_xact_commit_timestamp(e.xmin) AS committed_at \
                 FROM signal_events e ",
            $scan,
            "), \
             bound AS ( \
                 SELECT b.scan_full, b.last_xact, \
                        CASE WHEN b.scan_full THEN (SELECT min(s.recorded_at) FROM scanned s \
                                                    WHERE s.xact_id = b.last_xact) END AS cap \
                 FROM (SELECT count(*) >= $7 AS scan_full, max(xact_id) AS last_xact FROM scanned) b), \
             relevant AS ( \
                 SELECT s.*, coalesce(s.committed_at <= horizon.h \
                                      AND (NOT bound.scan_full \
                                           OR (s.xact_id < bound.last_xact AND s.committed_at < bound.cap)), \
                                      false) AS ready \
                 FROM scanned s CROSS JOIN horizon CROSS JOIN bound \
                 WHERE s.recorded_at >= $1 - interval '10 minutes' \
                   AND (s.committed_at, s.sequence) > ($1, $2) \
                   AND (cardinality($4::text[]) = 0 OR s.event_type::text = ANY($4)) \
                   AND CASE WHEN $3 = '' THEN true \
                            ELSE EXISTS (SELECT 1 FROM signals t \
                                         WHERE t.signal_id = s.signal_id AND t.normalised_ticker = $3) END), \
             ranked AS ( \
                 SELECT r.*, row_number() OVER (ORDER BY r.committed_at, r.sequence) AS rn \
                 FROM relevant r WHERE r.ready), \
             next_floor AS ( \
                 SELECT greatest($6, least(snap.xmin, \
                                           CASE WHEN bound.scan_full THEN bound.last_xact END, \
                                           (SELECT min(r.xact_id) FROM relevant r WHERE NOT r.ready), \
                                           (SELECT min(r.xact_id) FROM ranked r WHERE r.rn > $5))) AS x \
                 FROM snap CROSS JOIN bound) "
        )
    };
}

macro_rules! tail_query {
    ($scan:literal) => {
        concat!(
            tail_ctes!($scan),
            "SELECT r.sequence, r.event_id, r.signal_id, r.ts, r.event_type, r.location, r.worker_id, \
                    r.details, r.error_info, r.http_status, r.response_data, r.recorded_at, \
                    r.recorded_by, t.normalised_ticker, r.committed_at, f.x AS next_floor, b.scan_full \
             FROM ranked r JOIN signals t ON t.signal_id = r.signal_id \
             CROSS JOIN next_floor f CROSS JOIN bound b \
             WHERE r.rn <= $5 \
             ORDER BY r.rn"
        )
    };
}

macro_rules! idle_query {
    ($scan:literal) => {
        concat!(
            tail_ctes!($scan),
            // Nothing is delivered: every relevant event holds the floor.
            "SELECT greatest($6, least(snap.xmin, \
                                       CASE WHEN b.scan_full THEN b.last_xact END, \
                                       (SELECT min(r.xact_id) FROM relevant r))) AS next_floor, \
                    b.scan_full \
             FROM snap CROSS JOIN bound b"
        )
    };
}

/// From the floor up in id order, at most $7 events.
const BY_FLOOR: &str =
    tail_query!("WHERE e.xact_id >= (SELECT $6::bigint OFFSET 0) ORDER BY e.xact_id LIMIT $7");
const IDLE_BY_FLOOR: &str =
    idle_query!("WHERE e.xact_id >= (SELECT $6::bigint OFFSET 0) ORDER BY e.xact_id LIMIT $7");
/// Without a floor (an older token): the whole lookback, once.
const BY_TIME: &str = tail_query!("WHERE e.recorded_at >= $1 - interval '10 minutes'");
const IDLE_BY_TIME: &str = idle_query!("WHERE e.recorded_at >= $1 - interval '10 minutes'");

/// What one poll asks for.
#[derive(Debug, Clone, Copy)]
pub struct Poll<'a> {
    pub after: TailPosition,
    pub ticker: &'a str,
    pub event_types: &'a [String],
    /// Most events delivered.
    pub batch: i64,
    /// Most events read from the floor up.
    pub scan: i64,
}

/// Binds a [`Poll`] to one of the queries above.
macro_rules! bind_poll {
    ($sql:expr, $poll:expr) => {{
        let poll: Poll<'_> = $poll;
        // Without a floor the scan is the whole lookback, never cut.
        let scan = if poll.after.floor.is_some() {
            poll.scan
        } else {
            i64::MAX
        };
        diesel::sql_query($sql)
            .bind::<Timestamptz, _>(poll.after.committed_at)
            .bind::<BigInt, _>(poll.after.sequence)
            .bind::<Text, _>(poll.ticker)
            .bind::<Array<Text>, _>(poll.event_types)
            .bind::<BigInt, _>(poll.batch)
            .bind::<Nullable<BigInt>, _>(poll.after.floor)
            .bind::<BigInt, _>(scan)
    }};
}

/// The next events after `poll.after`, oldest commit first, at most
/// `poll.batch`.
#[tracing::instrument(level = "debug", name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn next_events(pool: &PgPool, poll: Poll<'_>) -> Result<Vec<TailEvent>, DbError> {
    let mut conn = pool.get().await?;
    let sql = if poll.after.floor.is_some() {
        BY_FLOOR
    } else {
        BY_TIME
    };
    Ok(bind_poll!(sql, poll).load(&mut conn).await?)
}

/// After a poll that delivered nothing: where the floor moves (in its own
/// snapshot, which is as good since the position did not move).
#[tracing::instrument(level = "debug", name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn idle(pool: &PgPool, poll: Poll<'_>) -> Result<Idle, DbError> {
    let mut conn = pool.get().await?;
    let sql = if poll.after.floor.is_some() {
        IDLE_BY_FLOOR
    } else {
        IDLE_BY_TIME
    };
    Ok(bind_poll!(sql, poll).get_result(&mut conn).await?)
}
