//! Housekeeping the writer runs against the primary.

use audit_db::{DbError, PgPool};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

/// How long partition maintenance waits for a table lock before giving up
/// until its next run. Creating a partition locks `signal_events`; a bounded
/// wait keeps writers queued behind that lock request for at most this long.
const LOCK_TIMEOUT: &str = "2s";

/// Creates the premade daily partitions of `signal_events`. pg_partman's own
/// retention is not configured: it would detach inside a function, holding
/// ACCESS EXCLUSIVE on the parent; retention is `audit-admin retention run`'s
/// job (detach outside a transaction, archive, verify, then drop). Creating
/// partitions needs ownership of the table, which the writer's role does not
/// have: the migration's SECURITY DEFINER function runs pg_partman's
/// maintenance of this one partition set with the owner's rights.
#[tracing::instrument(name = "SELECT audit_maintain_partitions", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "audit_maintain_partitions"))]
pub async fn run_partition_maintenance(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    conn.batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    let result = diesel::sql_query("SELECT audit_maintain_partitions()")
        .execute(&mut conn)
        .await;
    // The connection goes back to the pool: leave it as it was.
    conn.batch_execute("RESET lock_timeout").await?;
    result?;
    Ok(())
}
