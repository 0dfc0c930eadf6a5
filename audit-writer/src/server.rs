//! Wiring: the writer service with its background tasks, served through
//! the shared plumbing (health, reflection, per-call spans, shutdown).

use crate::config::ServeArgs;
use crate::group_commit::GroupCommit;
use crate::grpc::WriterService;
use audit_db::{build_pool, maintenance, replication, rollups};
use audit_proto::v1::signal_writer_service_server::SignalWriterServiceServer;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Database(#[from] audit_db::DbError),
    #[error(transparent)]
    Serve(#[from] audit_telemetry::ServeError),
}

/// Serves on `listener` until `shutdown` resolves, then reports NOT_SERVING,
/// stops accepting, lets in-flight calls (and their group commits) finish.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let pool = build_pool(&args.pool())?;
    let maintenance_task = tokio::spawn(partition_maintenance(
        pool.clone(),
        Duration::from_secs(args.partition_maintenance_secs.max(1)),
    ));
    let rollup_task = tokio::spawn(refresh_rollups(
        pool.clone(),
        Duration::from_millis(args.rollup_refresh_ms.max(10)),
    ));
    let matview_task = tokio::spawn(refresh_materialized_views(
        pool.clone(),
        Duration::from_secs(args.matview_refresh_secs.max(1)),
    ));
    let group_commit = GroupCommit::start(pool.clone(), args.group_commit());
    let writer = SignalWriterServiceServer::new(WriterService::new(
        pool.clone(),
        args.limits(),
        args.max_batch_items,
        group_commit,
        args.ingest_slots,
        args.ingest(),
    ))
    .max_decoding_message_size(args.max_request_bytes);

    let result = audit_telemetry::serve(
        &[SignalWriterServiceServer::<WriterService>::NAME],
        Routes::new(writer),
        listener,
        Duration::from_millis(args.health_check_ms),
        move || {
            let pool = pool.clone();
            async move { replication::ping(&pool).await }
        },
        shutdown,
    )
    .await;
    maintenance_task.abort();
    rollup_task.abort();
    matview_task.abort();
    Ok(result?)
}

/// pg_partman keeps daily partitions premade ahead of time; run it at
/// start-up and then periodically, so events always have a partition to
/// land in besides the default one.
async fn partition_maintenance(pool: audit_db::PgPool, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match maintenance::run_partition_maintenance(&pool).await {
            Ok(()) => tracing::debug!("partition maintenance done"),
            Err(error) => tracing::warn!(%error, "partition maintenance failed"),
        }
    }
}

/// Recomputes the metric buckets that new events touched (the replica
/// cannot, being read-only), so dashboards lag raw events by about one period.
async fn refresh_rollups(pool: audit_db::PgPool, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match rollups::refresh(&pool).await {
            Ok(0) => {}
            Ok(buckets) => tracing::debug!(buckets, "rollups refreshed"),
            Err(error) => tracing::warn!(%error, "rollup refresh failed"),
        }
    }
}

/// Materialized views are refreshed here because the replica cannot.
async fn refresh_materialized_views(pool: audit_db::PgPool, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = rollups::refresh_materialized_views(&pool).await {
            tracing::warn!(%error, "materialized view refresh failed");
        }
    }
}
