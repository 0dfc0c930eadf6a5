//! Wiring: the writer service with health, reflection and per-call spans,
//! served until the shutdown future resolves.

use crate::config::ServeArgs;
use crate::group_commit::GroupCommit;
use crate::grpc::WriterService;
use audit_db::{build_pool, maintenance, replication};
use audit_proto::v1::signal_writer_service_server::SignalWriterServiceServer;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::Server;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Database(#[from] audit_db::DbError),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves on `listener` until `shutdown` resolves, then reports NOT_SERVING,
/// stops accepting, lets in-flight calls finish and returns.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let pool = build_pool(&args.pool())?;
    let service_name = SignalWriterServiceServer::<WriterService>::NAME;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(service_name, tonic_health::ServingStatus::NotServing)
        .await;
    let health_task = tokio::spawn(audit_telemetry::watch_health(
        reporter.clone(),
        vec![service_name.to_owned()],
        Duration::from_millis(args.health_check_ms),
        {
            let pool = pool.clone();
            move || {
                let pool = pool.clone();
                async move { replication::ping(&pool).await }
            }
        },
    ));
    let maintenance_task = tokio::spawn(partition_maintenance(
        pool.clone(),
        Duration::from_secs(args.partition_maintenance_secs.max(1)),
    ));

    let (reflection_v1, reflection_v1alpha) = audit_telemetry::reflection_services()?;
    let group_commit = GroupCommit::start(pool.clone(), args.group_commit());
    let writer = SignalWriterServiceServer::new(WriterService::new(
        pool,
        args.limits(),
        args.max_batch_items,
        group_commit,
        args.ingest_slots,
        args.ingest(),
    ))
    .max_decoding_message_size(args.max_request_bytes);

    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "audit-writer serving");
    let result = Server::builder()
        .trace_fn(audit_telemetry::grpc_span)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(writer)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            health_task.abort();
            maintenance_task.abort();
            audit_telemetry::report_stopping(&reporter, service_name).await;
        })
        .await;
    tracing::info!("audit-writer stopped");
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
