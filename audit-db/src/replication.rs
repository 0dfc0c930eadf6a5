//! WAL positions: the writer's consistency tokens and the replica's progress.
//!
//! Raw SQL here because these are server functions diesel has no DSL for.

use crate::{DbError, PgPool};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use tokio::time::Instant;

#[derive(QueryableByName)]
struct Lsn {
    #[diesel(sql_type = Text)]
    lsn: String,
}

/// The primary's flushed WAL position. Called after COMMIT returns, so it is
/// at or past the commit record, and already on disk, so the walsender can
/// ship it to the replica straight away.
pub async fn current_wal_lsn(conn: &mut AsyncPgConnection) -> Result<String, DbError> {
    current_wal_lsn_shared(conn).await
}

/// The same on a shared connection, so it can also be pipelined behind a
/// write (see `writes::record_signals_pipelined`).
pub(crate) async fn current_wal_lsn_shared(conn: &AsyncPgConnection) -> Result<String, DbError> {
    let mut shared = conn;
    let row: Lsn = crate::statements::CurrentWalLsn
        .get_result(&mut shared)
        .await?;
    Ok(row.lsn)
}

/// A token as written by the writer: two hexadecimal halves around a slash.
pub fn is_valid_lsn(token: &str) -> bool {
    token.split_once('/').is_some_and(|(hi, lo)| {
        !hi.is_empty()
            && !lo.is_empty()
            && hi.len() <= 8
            && lo.len() <= 8
            && hi.chars().chain(lo.chars()).all(|c| c.is_ascii_hexdigit())
    })
}

#[derive(QueryableByName)]
struct Replayed {
    #[diesel(sql_type = Bool)]
    caught_up: bool,
    #[diesel(sql_type = Text)]
    replayed: String,
}

/// Waits until the server this pool points at has replayed `lsn`, polling
/// every `interval` until `deadline`. A primary (no replay position) counts as
/// caught up: it has the write by definition.
pub async fn wait_for_lsn(
    pool: &PgPool,
    lsn: &str,
    deadline: Instant,
    interval: Duration,
) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    loop {
        let row: Replayed = diesel::sql_query(
            "SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, true) AS caught_up, \
                    COALESCE(pg_last_wal_replay_lsn()::text, 'primary') AS replayed",
        )
        .bind::<Text, _>(lsn)
        .get_result(&mut conn)
        .await?;
        if row.caught_up {
            return Ok(());
        }
        if Instant::now() + interval > deadline {
            return Err(DbError::ReplicaBehind {
                wanted: lsn.to_owned(),
                replayed: row.replayed,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

#[derive(Debug, Clone, QueryableByName)]
pub struct ReplicationStatus {
    #[diesel(sql_type = Nullable<Text>)]
    pub replay_lsn: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub receive_lsn: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_replayed_commit_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bool)]
    pub in_recovery: bool,
    /// Microseconds; zero when everything received has been replayed, since
    /// an idle primary makes `now() - last commit` grow without any lag.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub replay_lag_us: i64,
}

pub async fn replication_status(pool: &PgPool) -> Result<ReplicationStatus, DbError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT pg_last_wal_replay_lsn()::text AS replay_lsn, \
                pg_last_wal_receive_lsn()::text AS receive_lsn, \
                pg_last_xact_replay_timestamp() AS last_replayed_commit_at, \
                pg_is_in_recovery() AS in_recovery, \
                CASE WHEN NOT pg_is_in_recovery() \
                       OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
                       OR pg_last_xact_replay_timestamp() IS NULL THEN 0 \
                     ELSE (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1e6)::bigint \
                END AS replay_lag_us",
    )
    .get_result(&mut conn)
    .await?)
}

/// A cheap round trip, for health checks.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}
