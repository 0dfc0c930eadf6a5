//! Scheduled jobs run once per cluster, not once per writer pod.
//!
//! Every periodic job (partition maintenance, rollup refresh, analytics
//! refresh, retention, data-quality checks) runs inside
//! [`with_job_lock`]: a PostgreSQL session-level advisory lock per job,
//! taken with `pg_try_advisory_lock`, so when two writers (or a writer and
//! an operator's `audit-admin`) reach the same job at once, one runs it and
//! the other skips this turn instead of queueing behind it.
//!
//! The lock lives on a dedicated connection, outside the pool: a session
//! lock on a pooled connection would go back to the pool still held if the
//! job were cancelled, while a dedicated connection that is dropped closes,
//! and PostgreSQL releases the lock with the session (a crashed writer
//! cannot hold a job forever either).

use crate::{DbError, PgPool};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Integer};
use diesel_async::RunQueryDsl;
use std::future::Future;

/// The first key of every job lock (`pg_try_advisory_lock(int, int)`), so
/// these locks cannot collide with other users of advisory locks.
const NAMESPACE: i32 = 0x5341_4a42; // "SAJB"

/// The jobs that must run in one place at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    PartitionMaintenance,
    RollupRefresh,
    AnalyticsRefresh,
    Retention,
    QualityCheck,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::PartitionMaintenance,
        Job::RollupRefresh,
        Job::AnalyticsRefresh,
        Job::Retention,
        Job::QualityCheck,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::PartitionMaintenance => "partition_maintenance",
            Job::RollupRefresh => "rollup_refresh",
            Job::AnalyticsRefresh => "analytics_refresh",
            Job::Retention => "retention",
            Job::QualityCheck => "quality_check",
        }
    }

    /// The second key of the job's lock; never reuse a retired number.
    fn key(self) -> i32 {
        match self {
            Job::PartitionMaintenance => 1,
            Job::RollupRefresh => 2,
            // 3 was the materialized views' refresh, retired with them.
            Job::AnalyticsRefresh => 6,
            Job::Retention => 4,
            Job::QualityCheck => 5,
        }
    }
}

/// What [`with_job_lock`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn<T> {
    /// This caller held the lock and ran the job.
    Ran(T),
    /// Someone else holds the lock: the job was not run.
    Busy,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Runs `job` if no one else is running it anywhere in the cluster (the
/// same database); otherwise returns [`Turn::Busy`] at once.
pub async fn with_job_lock<T, E, F, Fut>(pool: &PgPool, job: Job, work: F) -> Result<Turn<T>, E>
where
    E: From<DbError>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut conn = pool
        .dedicated_connection()
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    let Locked { locked } = diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS locked")
        .bind::<Integer, _>(NAMESPACE)
        .bind::<Integer, _>(job.key())
        .get_result(&mut conn)
        .await
        .map_err(DbError::from)?;
    if !locked {
        return Ok(Turn::Busy);
    }
    let result = work().await;
    // Closing the connection (when it drops) releases the lock as well;
    // unlocking first keeps the release prompt and explicit.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
        .bind::<Integer, _>(NAMESPACE)
        .bind::<Integer, _>(job.key())
        .execute(&mut conn)
        .await;
    result.map(Turn::Ran)
}
