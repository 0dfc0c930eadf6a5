//! Wiring: the writer service with its periodic jobs, served through the
//! shared plumbing of `audit-server` (health, reflection, spans, metrics,
//! shutdown).

use crate::config::ServeArgs;
use crate::group_commit::GroupCommit;
use crate::grpc::WriterService;
use crate::jobs;
use audit_db::build_pool;
use audit_proto::v1::signal_writer_service_server::SignalWriterServiceServer;
use audit_server::{ServeError, Shutdown};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

/// How often the pool's size gauges are sampled.
const POOL_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Serves on `listener` until `shutdown` resolves, then reports NOT_SERVING,
/// stops accepting, ends open Ingest streams (after acknowledging the
/// chunks already taken) and lets in-flight calls (and their group commits)
/// finish, for at most the configured grace period.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // First, so every instrument below registers with the recorder.
    let _metrics = audit_server::metrics::listen(
        args.metrics_listen.0,
        "audit-writer",
        env!("CARGO_PKG_VERSION"),
    )
    .await?;
    let shutdown = Shutdown::on(shutdown, args.shutdown.grace());
    let pool = build_pool(&args.pool());
    let mut jobs = jobs::start(&pool, &args.schedule());
    jobs.push(pool.watch(POOL_SAMPLE_EVERY));
    let group_commit = GroupCommit::start(pool.clone(), args.group_commit());
    let writer = SignalWriterServiceServer::new(WriterService::new(
        pool.clone(),
        args.limits(),
        args.max_batch_items,
        group_commit,
        args.ingest_slots,
        args.ingest(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(args.max_request_bytes);

    let result = audit_server::serve(
        &[SignalWriterServiceServer::<WriterService>::NAME],
        Routes::new(writer),
        listener,
        &args.connection,
        Duration::from_millis(args.health_check_ms),
        pool,
        shutdown,
    )
    .await;
    for job in jobs {
        job.abort();
    }
    result
}
