//! Wiring: the writer service with its periodic jobs, served through the
//! shared plumbing of `audit-server` (health, reflection, spans, metrics,
//! shutdown).

use crate::config::ServeArgs;
use crate::group_commit::GroupCommit;
use crate::grpc::WriterService;
use crate::jobs;
use audit_db::build_pool;
use audit_migrations::MigrationError;
use audit_proto::v1::signal_writer_service_server::SignalWriterServiceServer;
use audit_server::auth::{Access, Role};
use audit_server::{ServeError, Shutdown};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

/// How often the pool's size gauges are sampled.
const POOL_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Refuses a database migrated by a newer release (an applied migration this
/// build does not embed): this build's statements may not fit that schema.
/// A database that cannot be reached passes: the writer starts NOT_SERVING
/// and serves once it is up. `--allow-newer-schema` turns the refusal into a
/// warning, for rollbacks over additive migrations.
pub async fn check_schema(args: &ServeArgs) -> Result<(), MigrationError> {
    match audit_migrations::ensure_known(&args.database.database_url).await {
        Ok(_) => Ok(()),
        Err(error @ MigrationError::NewerSchema(_)) if !args.allow_newer_schema => Err(error),
        Err(error @ MigrationError::NewerSchema(_)) => {
            tracing::warn!(%error, "starting anyway (AUDIT_ALLOW_NEWER_SCHEMA)");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "cannot check the schema version now");
            Ok(())
        }
    }
}

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
    let security = args.security.load(policy)?;
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
        security,
        Duration::from_millis(args.health_check_ms),
        move || {
            let pool = pool.clone();
            async move { audit_db::replication::ping(&pool).await }
        },
        shutdown,
    )
    .await;
    for job in jobs {
        job.abort();
    }
    result
}

/// Who may call what: every writer RPC (Ingest, Record*, AddTags,
/// RemoveTags) needs the `writer` role. Anything else served here — admin
/// RPCs to come — needs `admin`. Health and reflection are decided by
/// `AUDIT_AUTH_OPEN_HEALTH` / `AUDIT_AUTH_OPEN_REFLECTION`.
pub fn policy(path: &str) -> Access {
    let writer = SignalWriterServiceServer::<WriterService>::NAME;
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, _)) if service == writer => Access::Role(Role::Writer),
        _ => Access::Role(Role::Admin),
    }
}
