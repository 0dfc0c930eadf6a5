//! Wiring: the reader and analytics services, served through the shared
//! plumbing of `audit-server` (health, reflection, spans, metrics,
//! shutdown).

use crate::analytics::AnalyticsService;
use crate::cache::AnswerCache;
use crate::config::ServeArgs;
use crate::consistency::Consistency;
use crate::grpc::ReaderService;
use crate::replica::Replicas;
use audit_proto::v1::signal_analytics_service_server::SignalAnalyticsServiceServer;
use audit_proto::v1::signal_reader_service_server::SignalReaderServiceServer;
use audit_server::auth::{Access, Role};
use audit_server::{ServeError, Shutdown};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

/// How often the pool's size gauges are sampled.
const POOL_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Serves on `listener` until `shutdown` resolves, then reports NOT_SERVING,
/// stops accepting, ends open StreamEvents and ExportSignals streams with
/// UNAVAILABLE, lets in-flight calls finish and returns, after at most the
/// configured grace period.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // First, so every instrument below registers with the recorder.
    let _metrics = audit_server::metrics::listen(
        args.metrics_listen.0,
        "audit-reader",
        env!("CARGO_PKG_VERSION"),
    )
    .await?;
    let shutdown = Shutdown::on(shutdown, args.shutdown.grace());
    let security = args.security.load(policy)?;
    let pools = args.pools();
    if pools.is_empty() {
        return Err(ServeError::Config(
            "AUDIT_REPLICA_URL (--replica-url) names no replica".to_owned(),
        ));
    }
    let replicas = Replicas::build(&pools);
    let health_every = Duration::from_millis(args.health_check_ms);
    let mut watchers = replicas.watch_pools(POOL_SAMPLE_EVERY);
    watchers.extend(replicas.watch(health_every));
    let reader = SignalReaderServiceServer::new(ReaderService::new(
        replicas.clone(),
        Consistency {
            max_wait: Duration::from_millis(args.consistency_max_wait_ms),
            poll: Duration::from_millis(args.consistency_poll_ms.max(1)),
            shutdown: shutdown.clone(),
        },
        Duration::from_millis(args.tail_poll_ms.max(1)),
        shutdown.clone(),
    ))
    .max_decoding_message_size(args.max_request_bytes);

    let cache = AnswerCache::new(
        Duration::from_millis(args.cache_ttl_ms),
        args.cache_max_entries,
        args.redis_url.as_deref(),
        args.redis_ca_file.as_deref(),
    )
    .await;
    let analytics =
        SignalAnalyticsServiceServer::new(AnalyticsService::new(replicas.clone(), cache))
            .max_decoding_message_size(args.max_request_bytes);

    let result = audit_server::serve(
        &[
            SignalReaderServiceServer::<ReaderService>::NAME,
            SignalAnalyticsServiceServer::<AnalyticsService>::NAME,
        ],
        Routes::new(reader).add_service(analytics),
        listener,
        &args.connection,
        security,
        health_every,
        move || {
            let replicas = replicas.clone();
            async move {
                replicas
                    .healthy(health_every.max(Duration::from_secs(1)))
                    .await
            }
        },
        shutdown,
    )
    .await;
    for watcher in watchers {
        watcher.abort();
    }
    result
}

/// Who may call what: every read, export, tail and analytics RPC needs the
/// `reader` role; anything else served here (admin RPCs to come) needs
/// `admin`. Health and reflection are decided by `AUDIT_AUTH_OPEN_HEALTH` /
/// `AUDIT_AUTH_OPEN_REFLECTION`.
pub fn policy(path: &str) -> Access {
    let reader = SignalReaderServiceServer::<ReaderService>::NAME;
    let analytics = SignalAnalyticsServiceServer::<AnalyticsService>::NAME;
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, _)) if service == reader || service == analytics => {
            Access::Role(Role::Reader)
        }
        _ => Access::Role(Role::Admin),
    }
}
