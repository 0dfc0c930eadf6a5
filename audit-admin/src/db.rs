//! Connections for operator commands: a small pool on the primary without a
//! statement timeout (archiving a day takes as long as it takes), and DDL
//! that waits for its table lock only briefly, retrying instead of queueing
//! writers behind it.

use crate::cli::Global;
use crate::error::AdminError;
use audit_db::{DbError, PgPool, PoolConfig, build_pool};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use std::time::Duration;

pub fn pool(global: &Global) -> PgPool {
    build_pool(&PoolConfig {
        name: "admin".into(),
        url: global.database_url.clone(),
        min_idle: 0,
        max_size: 4,
        connect_timeout: Duration::from_secs(10),
        // 0: none. Operator commands are long by nature; lock waits are
        // bounded by lock_timeout instead.
        statement_timeout: Duration::ZERO,
        application_name: "audit-admin".into(),
        read_only: false,
        test_on_checkout: true,
    })
}

/// A connection of its own (not returned to a pool), for session settings
/// and statements that must run outside a transaction.
pub async fn connection(pool: &PgPool) -> Result<AsyncPgConnection, AdminError> {
    pool.dedicated_connection()
        .await
        .map_err(|e| AdminError::Db(DbError::Unavailable(e.to_string())))
}

/// Whether a statement gave up waiting for a lock (`lock_timeout`).
pub fn is_lock_timeout(error: &DbError) -> bool {
    matches!(error, DbError::Timeout(message) if message.contains("lock timeout"))
}

/// Runs one DDL statement once (simple protocol, outside any transaction,
/// as `DETACH … CONCURRENTLY` requires) with `lock_timeout`.
pub async fn ddl_once(
    conn: &mut AsyncPgConnection,
    global: &Global,
    sql: &str,
) -> Result<(), DbError> {
    conn.batch_execute(&format!("SET lock_timeout = {}", global.lock_timeout_ms))
        .await
        .map_err(DbError::from)?;
    let result = conn.batch_execute(sql).await.map_err(DbError::from);
    conn.batch_execute("RESET lock_timeout")
        .await
        .map_err(DbError::from)?;
    result
}

/// The pause before attempt `attempt + 1` of a statement that hit the lock
/// timeout: growing, so a long transaction in the way is waited out
/// without hammering the lock queue.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 * u64::from(attempt))
}

/// Runs one DDL statement with [`ddl_once`], retrying with a growing pause
/// when the lock is not granted in time. Returns the attempts it took.
pub async fn ddl(
    conn: &mut AsyncPgConnection,
    global: &Global,
    sql: &str,
) -> Result<u32, AdminError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ddl_once(conn, global, sql).await {
            Ok(()) => return Ok(attempt),
            Err(error) if is_lock_timeout(&error) && attempt < global.lock_retries.max(1) => {
                tracing::info!(attempt, sql, "lock not granted in time, retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(error) => return Err(AdminError::Db(error)),
        }
    }
}
