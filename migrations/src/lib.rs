//! The database schema of Signal Audit Trail as diesel migrations.
//!
//! The SQL under `sql/` is embedded at compile time, so `audit-writer migrate`
//! needs no files next to the binary. Diesel's migration runner is
//! synchronous; it runs on a blocking thread through diesel-async's
//! connection wrapper so callers stay async and no libpq is linked.
//!
//! Reading which migrations are applied ([`applied`], [`status`],
//! [`ensure_known`]) does not go through the runner: its bookkeeping first
//! runs `CREATE TABLE IF NOT EXISTS __diesel_schema_migrations`, which the
//! least-privilege roles may not do (no CREATE on the schema), so the
//! writer's schema guard and `audit-admin migrate status` read the table
//! directly. Migration `2026-12-05-000200_migrations_table_grants` lets the
//! service roles SELECT it.

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("sql");

diesel::table! {
    /// Diesel's bookkeeping: one row per applied migration (the version
    /// without dashes, `20261201001100`). Created by the runner the first
    /// time it migrates a database.
    __diesel_schema_migrations (version) {
        version -> VarChar,
        run_on -> Timestamp,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("migration task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The bookkeeping table cannot be read, e.g. by a service role of a
    /// database migrated before its SELECT was granted.
    #[error(
        "cannot read the applied migrations from __diesel_schema_migrations: {0} \
         (service roles may read it from migration 2026-12-05-000200_migrations_table_grants on)"
    )]
    Read(diesel::result::Error),
    /// The database carries migrations this build does not know: a newer
    /// release migrated it, and this one must not write to that schema.
    #[error(
        "the database schema is newer than this build: applied migration(s) {} are unknown to it; \
         run a release that knows them (or revert them with that release's `audit-admin migrate down`)",
        .0.join(", ")
    )]
    NewerSchema(Vec<String>),
}

/// Every migration of this build, oldest first.
pub fn known() -> Vec<String> {
    let mut versions: Vec<String> = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map(|migrations| {
            migrations
                .iter()
                .map(|m| m.name().version().to_string())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
}

/// Where a database stands against this build's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Applied and known to this build, oldest first.
    pub applied: Vec<String>,
    /// Known to this build, not applied yet, oldest first.
    pub pending: Vec<String>,
    /// Applied but unknown to this build (a newer release migrated the database).
    pub unknown: Vec<String>,
}

impl Status {
    fn of(applied: Vec<String>) -> Self {
        let known = known();
        Self {
            pending: known
                .iter()
                .filter(|v| !applied.contains(v))
                .cloned()
                .collect(),
            unknown: applied
                .iter()
                .filter(|v| !known.contains(v))
                .cloned()
                .collect(),
            applied: applied.into_iter().filter(|v| known.contains(v)).collect(),
        }
    }
}

/// Applied, pending and unknown migrations.
pub async fn status(database_url: &str) -> Result<Status, MigrationError> {
    let mut applied = applied(database_url).await?;
    applied.sort();
    Ok(Status::of(applied))
}

/// Fails with [`MigrationError::NewerSchema`] when the database carries a
/// migration this build does not embed. A database never migrated passes.
pub async fn ensure_known(database_url: &str) -> Result<Status, MigrationError> {
    let status = status(database_url).await?;
    if status.unknown.is_empty() {
        Ok(status)
    } else {
        Err(MigrationError::NewerSchema(status.unknown))
    }
}

/// Reverts the `steps` newest migrations, newest first; returns their
/// versions. Refuses when the newest applied migration is unknown to this
/// build (it cannot know how to revert it).
pub async fn revert_last(database_url: &str, steps: usize) -> Result<Vec<String>, MigrationError> {
    ensure_known(database_url).await?;
    with_connection(database_url, move |conn| {
        let mut reverted = Vec::new();
        for _ in 0..steps {
            if conn
                .applied_migrations()
                .map_err(|e| MigrationError::Migration(e.to_string()))?
                .is_empty()
            {
                break;
            }
            let version = conn
                .revert_last_migration(MIGRATIONS)
                .map_err(|e| MigrationError::Migration(e.to_string()))?;
            reverted.push(version.to_string());
        }
        Ok(reverted)
    })
    .await
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

/// Versions applied so far, oldest first, read straight from the
/// bookkeeping table (see the module docs); a database never migrated (no
/// table) has none.
pub async fn applied(database_url: &str) -> Result<Vec<String>, MigrationError> {
    let mut conn = audit_db::establish(database_url).await?;
    // Honours the search_path, as the runner's own unqualified name does.
    let exists: bool = diesel::select(diesel::dsl::sql::<Bool>(
        "to_regclass('__diesel_schema_migrations') IS NOT NULL",
    ))
    .get_result(&mut conn)
    .await
    .map_err(MigrationError::Read)?;
    if !exists {
        return Ok(Vec::new());
    }
    __diesel_schema_migrations::table
        .select(__diesel_schema_migrations::version)
        .order(__diesel_schema_migrations::version)
        .load(&mut conn)
        .await
        .map_err(MigrationError::Read)
}
