//! Analytics queries, one module per feature. Each takes the connection of
//! the caller's read-only transaction, so an answer and its `as_of` come
//! from one snapshot. Raw SQL lives here because these are aggregates
//! diesel's DSL cannot express (histogram merges and quantiles, window
//! functions, generate_series, grouping sets).

pub mod activity;
pub mod errors;
pub mod histogram;
pub mod metrics;
pub mod regressions;
pub mod search;
pub mod stages;
pub mod trends;

use audit_core::TickerScope;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// How the rollup tables spell a scope: the '*' rows are summed over
/// every ticker.
pub(crate) fn rollup_key(scope: &TickerScope) -> &str {
    scope.ticker().unwrap_or("*")
}

/// How filters over raw rows and views bind a scope: `$n = '' OR … = $n`.
pub(crate) fn filter_value(scope: &TickerScope) -> &str {
    scope.ticker().unwrap_or("")
}

#[derive(QueryableByName)]
struct AsOf {
    #[diesel(sql_type = Timestamptz)]
    refreshed_at: DateTime<Utc>,
}

/// When the rollups were last brought up to date.
pub async fn as_of(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>, DbError> {
    let row: AsOf = diesel::sql_query("SELECT refreshed_at FROM rollup_state")
        .get_result(conn)
        .await?;
    Ok(row.refreshed_at)
}

/// How current an answer read straight from raw events on this server is:
/// now when it has replayed everything it received (or is the primary),
/// else the commit time of the last transaction it replayed.
pub async fn replica_as_of(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>, DbError> {
    let row: AsOf = diesel::sql_query(
        "SELECT CASE WHEN NOT pg_is_in_recovery() \
                       OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() \
                       OR pg_last_xact_replay_timestamp() IS NULL THEN now() \
                     ELSE pg_last_xact_replay_timestamp() END AS refreshed_at",
    )
    .get_result(conn)
    .await?;
    Ok(row.refreshed_at)
}

/// When the hourly analytics tables (stage latencies, ticker activity) were
/// last brought up to date: the as_of of answers read from them.
pub(crate) async fn analytics_as_of(
    conn: &mut AsyncPgConnection,
) -> Result<DateTime<Utc>, DbError> {
    let row: AsOf = diesel::sql_query("SELECT refreshed_at FROM analytics_state")
        .get_result(conn)
        .await?;
    Ok(row.refreshed_at)
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    found: bool,
}

/// Whether any signal has this normalised ticker.
pub async fn ticker_exists(conn: &mut AsyncPgConnection, ticker: &str) -> Result<bool, DbError> {
    let row: Exists = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM signals WHERE normalised_ticker = $1) AS found",
    )
    .bind::<Text, _>(ticker)
    .get_result(conn)
    .await?;
    Ok(row.found)
}
