//! The writer's periodic jobs on the primary (the replica cannot write):
//! pg_partman maintenance, the rollup refresh, the hourly analytics tables'
//! refresh and the data-quality checks; and the sampler of the gauges that
//! say whether they keep up (rollup backlog, analytics age, partitions
//! premade).
//!
//! Each job's runs are counted in `audit_job_runs_total`, timed in
//! `audit_job_duration_seconds` and stamped in
//! `audit_job_last_success_timestamp_seconds` (docs/metrics.md). Each run
//! takes its job's cluster-wide lock first ([`audit_db::leader`]), so with
//! several writers every job runs in one of them at a time; the others skip
//! that turn (a skipped turn counts as a successful run).

use crate::store::{analytics, maintenance, rollups, status};
use audit_db::leader::{Job, Turn, with_job_lock};
use audit_db::quality::Check;
use audit_db::{DbError, PgPool};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// How often the backlog gauges are read: about a scrape interval.
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Runs `job` now and then every `period` until aborted; a run that fails
/// is logged and the next one tries again. A run that overruns delays the
/// next one instead of queueing catch-up runs. Its series exist from now
/// on, with zero runs, so alerts see them before the first failure.
pub fn every<F, Fut>(name: &'static str, period: Duration, job: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), DbError>> + Send,
{
    let ok = metrics::counter!("audit_job_runs_total", "job_name" => name, "outcome" => "ok");
    let failed =
        metrics::counter!("audit_job_runs_total", "job_name" => name, "outcome" => "error");
    let duration = metrics::histogram!("audit_job_duration_seconds", "job_name" => name);
    ok.increment(0);
    failed.increment(0);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let started = Instant::now();
            // One trace per run; its database work nests under it.
            let span = tracing::info_span!("job", otel.name = name, job_name = name);
            let result = job().instrument(span).await;
            let elapsed = started.elapsed();
            duration.record(elapsed.as_secs_f64());
            match result {
                Ok(()) => {
                    ok.increment(1);
                    // Registered at the first success: absent until then.
                    metrics::gauge!("audit_job_last_success_timestamp_seconds", "job_name" => name)
                        .set(unix_now());
                    tracing::debug!(job = name, elapsed_ms = elapsed.as_millis() as u64, "done");
                }
                Err(error) => {
                    failed.increment(1);
                    tracing::warn!(job = name, %error, "failed");
                }
            }
        }
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs `work` unless another writer (or `audit-admin`) is running `job`.
async fn once_per_cluster<T, Fut>(pool: &PgPool, job: Job, work: Fut) -> Result<Option<T>, DbError>
where
    Fut: Future<Output = Result<T, DbError>>,
{
    match with_job_lock(pool, job, || work).await? {
        Turn::Ran(value) => Ok(Some(value)),
        Turn::Busy => {
            tracing::debug!(job = job.name(), "running elsewhere, skipped");
            Ok(None)
        }
    }
}

/// How often each job runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub partition_maintenance: Duration,
    pub rollup_refresh: Duration,
    pub analytics_refresh: Duration,
    pub data_quality: Duration,
}

/// Starts every job and the gauge sampler; abort the handles to stop them.
pub fn start(pool: &PgPool, schedule: &Schedule) -> Vec<JoinHandle<()>> {
    let (p1, p2, p3, p4) = (pool.clone(), pool.clone(), pool.clone(), pool.clone());
    let quality_period = schedule.data_quality;
    vec![
        // pg_partman keeps daily partitions premade ahead of time, so events
        // always have a partition to land in besides the default one.
        every(
            "partition_maintenance",
            schedule.partition_maintenance,
            move || {
                let pool = p1.clone();
                async move {
                    let work = maintenance::run_partition_maintenance(&pool);
                    once_per_cluster(&pool, Job::PartitionMaintenance, work).await?;
                    Ok(())
                }
            },
        ),
        // Dashboards lag raw events by about one period.
        every("rollup_refresh", schedule.rollup_refresh, move || {
            let pool = p2.clone();
            async move {
                once_per_cluster(&pool, Job::RollupRefresh, rollups::refresh(&pool)).await?;
                Ok(())
            }
        }),
        // GetStageLatencies and GetTickerActivity lag raw events by about a
        // rollup period plus one of these plus the minute in progress (a
        // pass takes only ended minutes, each read once).
        every("analytics_refresh", schedule.analytics_refresh, move || {
            let pool = p3.clone();
            async move {
                once_per_cluster(
                    &pool,
                    Job::AnalyticsRefresh,
                    analytics::refresh(&pool, analytics::Minutes::Closed),
                )
                .await?;
                Ok(())
            }
        }),
        data_quality(p4, quality_period),
        sample(pool.clone()),
    ]
}

/// The data-quality job: checks the minutes changed since their last check
/// and stores their findings (what `CheckDataQuality` answers them from);
/// as gauges, the stored findings of the last day by kind and the stuck
/// signals (0 from start-up, so a clean writer shows clean series). Run by
/// one writer at a time: the others keep their last values (alert on the
/// maximum across pods). The minute in progress waits for the next run.
fn data_quality(pool: PgPool, period: Duration) -> JoinHandle<()> {
    for check in Check::ALL {
        metrics::gauge!("audit_data_quality_findings", "kind" => check.as_str()).set(0.0);
    }
    metrics::gauge!("audit_stuck_signals").set(0.0);
    every("data_quality", period, move || {
        let pool = pool.clone();
        async move {
            let work = status::data_quality(&pool, chrono::Utc::now());
            let Some(run) = once_per_cluster(&pool, Job::QualityCheck, work).await? else {
                return Ok(());
            };
            for (check, count) in run.counts {
                let count = count as f64;
                metrics::gauge!("audit_data_quality_findings", "kind" => check.as_str()).set(count);
                if check == Check::StuckSignals {
                    metrics::gauge!("audit_stuck_signals").set(count);
                }
            }
            Ok(())
        }
    })
}

/// Reads the backlog gauges every [`SAMPLE_EVERY`]; not a job (no runs
/// counted): a failure only leaves the last values in place.
fn sample(pool: PgPool) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match status::read(&pool).await {
                Ok(status) => {
                    metrics::gauge!("audit_rollup_backlog_seconds").set(status.rollup_backlog_secs);
                    metrics::gauge!("audit_analytics_age_seconds").set(status.analytics_age_secs);
                    metrics::gauge!("audit_partitions_premade_days")
                        .set(status.partitions_premade_days);
                }
                Err(error) => tracing::debug!(%error, "cannot read the backlog gauges"),
            }
        }
    })
}
