//! WAL positions: the writer's consistency tokens and the replica's progress.
//!
//! Raw SQL here because these are server functions diesel has no DSL for.

use crate::{DbError, PgPool};
use audit_core::Lsn;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Nullable, Text, Timestamptz, Untyped};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(QueryableByName)]
struct LsnRow {
    #[diesel(sql_type = Text)]
    lsn: String,
}

/// The flush position after a commit: the consistency token. A statement
/// type with a static query id, so diesel-async prepares it once per
/// connection (a `sql_query` would be parsed again on every call).
struct CurrentWalLsn;

impl QueryId for CurrentWalLsn {
    type QueryId = CurrentWalLsn;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for CurrentWalLsn {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for CurrentWalLsn {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("SELECT pg_current_wal_flush_lsn()::text AS lsn");
        Ok(())
    }
}

/// The primary's flushed WAL position. Called after COMMIT returns, so it is
/// at or past the commit record, and already on disk, so the walsender can
/// ship it to the replica straight away.
pub async fn current_wal_lsn(conn: &mut AsyncPgConnection) -> Result<Lsn, DbError> {
    current_wal_lsn_shared(conn).await
}

/// The same on a shared connection, so it can also be pipelined behind a
/// write (see the writer's `store::record_signals_pipelined`).
pub async fn current_wal_lsn_shared(conn: &AsyncPgConnection) -> Result<Lsn, DbError> {
    let mut shared = conn;
    let row: LsnRow = CurrentWalLsn.get_result(&mut shared).await?;
    Ok(Lsn::from_server(row.lsn))
}

#[derive(QueryableByName)]
struct Replayed {
    #[diesel(sql_type = Nullable<Text>)]
    replayed: Option<String>,
}

/// How far the server this pool points at has replayed the WAL; `None` for a
/// primary, which has every write by definition. One round trip: callers
/// that wait for a token poll this (the reader polls each of its replicas).
#[tracing::instrument(name = "SELECT pg_last_wal_replay_lsn", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "pg_last_wal_replay_lsn"))]
pub async fn replayed(pool: &PgPool) -> Result<Option<Lsn>, DbError> {
    let mut conn = pool.get().await?;
    let row: Replayed = diesel::sql_query("SELECT pg_last_wal_replay_lsn()::text AS replayed")
        .get_result(&mut conn)
        .await?;
    Ok(row.replayed.map(Lsn::from_server))
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
