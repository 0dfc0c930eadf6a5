//! The database schema of Signal Audit Trail as diesel migrations.
//!
//! The SQL under `sql/` is embedded at compile time, so `audit-writer migrate`
//! needs no files next to the binary. Diesel's migration runner is
//! synchronous; it runs on a blocking thread through diesel-async's
//! connection wrapper so callers stay async and no libpq is linked.

use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("sql");

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("migration task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

type Wrapper = AsyncConnectionWrapper<AsyncPgConnection>;

async fn with_connection<T, F>(database_url: &str, work: F) -> Result<T, MigrationError>
where
    T: Send + 'static,
    F: FnOnce(&mut Wrapper) -> Result<T, MigrationError> + Send + 'static,
{
    // Connected here, with the TLS the URL asks for (audit_db::establish);
    // the blocking wrapper then drives it on this runtime.
    let conn = audit_db::establish(database_url).await?;
    tokio::task::spawn_blocking(move || {
        let mut conn = Wrapper::from(conn);
        work(&mut conn)
    })
    .await?
}

/// Applies every pending migration; returns the versions applied (none when up to date).
pub async fn run_pending(database_url: &str) -> Result<Vec<String>, MigrationError> {
    with_connection(database_url, |conn| {
        conn.run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| MigrationError::Migration(e.to_string()))
    })
    .await
}

/// Reverts every applied migration, newest first.
pub async fn revert_all(database_url: &str) -> Result<Vec<String>, MigrationError> {
    with_connection(database_url, |conn| {
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| MigrationError::Migration(e.to_string()))
    })
    .await
}

/// Versions applied so far, oldest first.
pub async fn applied(database_url: &str) -> Result<Vec<String>, MigrationError> {
    with_connection(database_url, |conn| {
        conn.applied_migrations()
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| MigrationError::Migration(e.to_string()))
    })
    .await
}
