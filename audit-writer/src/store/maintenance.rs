//! Housekeeping the writer runs against the primary.

use audit_db::{DbError, PgPool};
use diesel_async::RunQueryDsl;

/// Creates the premade daily partitions of `signal_events`. pg_partman's own
/// retention is not configured: it would detach inside a function, holding
/// ACCESS EXCLUSIVE on the parent. A procedure, because it commits per
/// partition set; it must not run inside a transaction.
#[tracing::instrument(name = "CALL partman.run_maintenance_proc", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "CALL", db.collection.name = "partman.run_maintenance_proc"))]
pub async fn run_partition_maintenance(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("CALL partman.run_maintenance_proc()")
        .execute(&mut conn)
        .await?;
    Ok(())
}
