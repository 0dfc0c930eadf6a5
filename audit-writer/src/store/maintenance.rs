//! Housekeeping the writer runs against the primary.

use audit_db::{DbError, PgPool};
use diesel_async::RunQueryDsl;

/// Creates the premade daily partitions of `signal_events`. pg_partman's own
/// retention is not configured: it would detach inside a function, holding
/// ACCESS EXCLUSIVE on the parent. Creating partitions needs ownership of
/// the table, which the writer's role does not have: the migration's
/// SECURITY DEFINER function runs pg_partman's maintenance of this one
/// partition set (one transaction, as the procedure would commit it) with
/// the owner's rights.
#[tracing::instrument(name = "SELECT audit_maintain_partitions", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "audit_maintain_partitions"))]
pub async fn run_partition_maintenance(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT audit_maintain_partitions()")
        .execute(&mut conn)
        .await?;
    Ok(())
}
