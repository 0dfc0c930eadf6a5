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

fn is_lock_timeout(error: &DbError) -> bool {
    matches!(error, DbError::Timeout(message) if message.contains("lock timeout"))
}

/// Runs one DDL statement (simple protocol, outside any transaction, as
/// `DETACH … CONCURRENTLY` requires) with `lock_timeout`, retrying with a
/// growing pause when the lock is not granted in time. Returns the attempts
/// it took.
pub async fn ddl(
    conn: &mut AsyncPgConnection,
    global: &Global,
    sql: &str,
) -> Result<u32, AdminError> {
    conn.batch_execute(&format!("SET lock_timeout = {}", global.lock_timeout_ms))
        .await
        .map_err(DbError::from)?;
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match conn.batch_execute(sql).await.map_err(DbError::from) {
            Ok(()) => break Ok(attempt),
            Err(error) if is_lock_timeout(&error) && attempt < global.lock_retries.max(1) => {
                tracing::info!(attempt, sql, "lock not granted in time, retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(error) => break Err(AdminError::Db(error)),
        }
    };
    conn.batch_execute("RESET lock_timeout")
        .await
        .map_err(DbError::from)?;
    result
}
