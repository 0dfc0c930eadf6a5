//! Housekeeping the writer runs against the primary.

use audit_db::{DbError, PgPool};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

/// How long partition maintenance waits for a table lock before giving up
/// until its next run. Creating a partition locks `signal_events` and, for
/// the cloned foreign key, `signals`, in an order that can close a cycle
/// with a writer's transaction (signals, then events, then the signal row's
/// update). Waiting less than PostgreSQL's `deadlock_timeout` (1 s by
/// default) makes maintenance give up before the deadlock detector runs in
/// the writer's backend, so the writer's transaction is never the one
/// aborted; a bounded wait also keeps writers queued behind the lock
/// request for at most this long.
const LOCK_TIMEOUT: &str = "500ms";

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
