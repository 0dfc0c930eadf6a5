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
//! replica has been idle and caught up for a second. Raw SQL: system column
//! and replication functions.

use audit_db::models::EventRow;
use audit_db::{DbError, PgPool};
use audit_wire::token::TailPosition;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel_async::RunQueryDsl;

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct TailEvent {
    #[diesel(embed)]
    pub event: EventRow,
    #[diesel(sql_type = Text)]
    pub normalised_ticker: String,
    #[diesel(sql_type = Timestamptz)]
    pub committed_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

/// A position before every event committed from now on.
#[tracing::instrument(name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn start_position(pool: &PgPool) -> Result<TailPosition, DbError> {
    let mut conn = pool.get().await?;
    let Now { now } = diesel::sql_query("SELECT now() AS now")
        .get_result(&mut conn)
        .await?;
    Ok(TailPosition {
        committed_at: now,
        sequence: i64::MAX,
    })
}

/// The next events after `after`, oldest commit first, at most `limit`.
#[tracing::instrument(level = "debug", name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn next_events(
    pool: &PgPool,
    after: TailPosition,
    ticker: &str,
    event_types: &[String],
    limit: i64,
) -> Result<Vec<TailEvent>, DbError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "WITH horizon AS ( \
             SELECT CASE WHEN NOT pg_is_in_recovery() THEN now() - interval '50 milliseconds' \
                         WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
                          AND now() - pg_last_xact_replay_timestamp() > interval '1 second' \
                         THEN pg_last_xact_replay_timestamp() \
                         ELSE pg_last_xact_replay_timestamp() - interval '50 milliseconds' END AS h) \
         SELECT e.sequence, e.event_id, e.signal_id, e.ts, e.event_type, e.location, e.worker_id, \
                e.details, e.error_info, e.http_status, e.response_data, e.recorded_at, e.recorded_by, \
                s.normalised_ticker, c.committed_at \
         FROM signal_events e \
         JOIN signals s ON s.signal_id = e.signal_id \
         CROSS JOIN LATERAL (SELECT pg_xact_commit_timestamp(e.xmin) AS committed_at) c \
         CROSS JOIN horizon \
         WHERE e.recorded_at >= $1 - interval '10 minutes' \
           AND (c.committed_at, e.sequence) > ($1, $2) \
           AND c.committed_at <= horizon.h \
           AND ($3 = '' OR s.normalised_ticker = $3) \
           AND (cardinality($4::text[]) = 0 OR e.event_type::text = ANY($4)) \
         ORDER BY c.committed_at, e.sequence \
         LIMIT $5",
    )
    .bind::<Timestamptz, _>(after.committed_at)
    .bind::<BigInt, _>(after.sequence)
    .bind::<Text, _>(ticker)
    .bind::<Array<Text>, _>(event_types)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?)
}
