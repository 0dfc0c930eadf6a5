//! The writer's periodic jobs on the primary (the replica cannot write):
//! pg_partman maintenance, the rollup refresh and the materialized views.

use crate::store::{maintenance, rollups};
use audit_db::{DbError, PgPool};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Runs `job` now and then every `period` until aborted; a run that fails
/// is logged and the next one tries again. A run that overruns delays the
/// next one instead of queueing catch-up runs.
pub fn every<F, Fut>(name: &'static str, period: Duration, job: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), DbError>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match job().await {
                Ok(()) => tracing::debug!(job = name, "done"),
                Err(error) => tracing::warn!(job = name, %error, "failed"),
            }
        }
    })
}

/// How often each job runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub partition_maintenance: Duration,
    pub rollup_refresh: Duration,
    pub matview_refresh: Duration,
}

/// Starts every job; abort the handles to stop them.
pub fn start(pool: &PgPool, schedule: &Schedule) -> Vec<JoinHandle<()>> {
    let (p1, p2, p3) = (pool.clone(), pool.clone(), pool.clone());
    vec![
        // pg_partman keeps daily partitions premade ahead of time, so events
        // always have a partition to land in besides the default one.
        every(
            "partition_maintenance",
            schedule.partition_maintenance,
            move || {
                let pool = p1.clone();
                async move { maintenance::run_partition_maintenance(&pool).await }
            },
        ),
        // Dashboards lag raw events by about one period.
        every("rollup_refresh", schedule.rollup_refresh, move || {
            let pool = p2.clone();
            async move { rollups::refresh(&pool).await.map(|_| ()) }
        }),
        every("matview_refresh", schedule.matview_refresh, move || {
            let pool = p3.clone();
            async move { rollups::refresh_materialized_views(&pool).await }
        }),
    ]
}
