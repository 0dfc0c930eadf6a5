//! The replica as this reader sees it, checked every `AUDIT_HEALTH_CHECK_MS`
//! next to the health check: `audit_reader_replica_up` (1 while the check
//! gets an answer) and `audit_reader_replica_lag_seconds` (replay lag; 0
//! when everything received is replayed, since an idle primary is not lag).

use audit_db::{DbError, PgPool, replication};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Runs [`check`] every `every` until the handle is aborted.
pub fn watch(pool: PgPool, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = check(&pool).await {
                tracing::debug!(%error, "replica unreachable");
            }
        }
    })
}

/// Reads the replica's replication status and sets its gauges.
pub async fn check(pool: &PgPool) -> Result<(), DbError> {
    let replica = pool.name().to_owned();
    match replication::replication_status(pool).await {
        Ok(status) => {
            metrics::gauge!("audit_reader_replica_up", "replica" => replica.clone()).set(1.0);
            metrics::gauge!("audit_reader_replica_lag_seconds", "replica" => replica)
                .set(status.replay_lag_us as f64 / 1e6);
            Ok(())
        }
        Err(error) => {
            metrics::gauge!("audit_reader_replica_up", "replica" => replica.clone()).set(0.0);
            Err(error)
        }
    }
}
