//! One gRPC server around a service's routes: health from real database
//! state, reflection, a span and RPC metrics per call, connection age,
//! TCP_NODELAY, graceful shutdown bounded by a grace period
//! ([`crate::drain`]).

use crate::config::ConnectionArgs;
use crate::drain::{self, Shutdown};
use crate::oversized::rewrite_oversized;
use crate::rpc_metrics::RpcMetricsLayer;
use crate::telemetry::grpc_span;
use std::future::Future;
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics endpoint: {0}")]
    Metrics(#[from] std::io::Error),
    #[error(transparent)]
    Security(#[from] crate::SecurityError),
    /// A setting that cannot work, found when the server starts.
    #[error("configuration: {0}")]
    Config(String),
}

/// Serves `routes` on `listener` next to health and reflection, one span per
/// call, TLS and caller checks as `security` says, until `shutdown` fires.
/// `services` report SERVING only while `health` succeeds (the writer pings
/// its primary, the reader asks whether any replica is healthy). On
/// shutdown: NOT_SERVING, stop accepting, let in-flight calls finish (the
/// services end their own streams), and return after at most the shutdown's
/// grace period whatever is still open.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one independent piece of the server's wiring, passed once by main"
)]
pub async fn serve<F, Fut, E>(
    services: &[&'static str],
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    connection: &ConnectionArgs,
    security: crate::Security,
    health_every: Duration,
    check: F,
    shutdown: Shutdown,
) -> Result<(), ServeError>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in services {
        reporter
            .set_service_status(*service, ServingStatus::NotServing)
            .await;
    }
    let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
    let health_task = tokio::spawn(watch_health(reporter.clone(), names, health_every, check));
    let (reflection_v1, reflection_v1alpha) = reflection_services()?;
    let routes = routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let services = services.to_vec();
    let reload_task = security.tls.clone().map(|tls| tokio::spawn(tls.watch()));
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        ?services,
        "serving"
    );
    let mut server = tonic::transport::Server::builder().trace_fn(grpc_span);
    if let Some(age) = connection.max_connection_age.0 {
        server = server.max_connection_age(age);
    }
    if let Some(grace) = connection.max_connection_age_grace.0 {
        server = server.max_connection_age_grace(grace);
    }
    let draining = shutdown.clone();
    let server = server
        .layer(RpcMetricsLayer)
        .layer(tower::util::MapResponseLayer::new(
            rewrite_oversized::<tonic::body::Body>,
        ))
        // Inside the metrics layer, so refused calls are counted too.
        .layer(crate::auth::AuthLayer::new(security.auth))
        .add_routes(routes)
        .serve_with_incoming_shutdown(crate::tls::incoming(listener, security.tls), async move {
            draining.draining().await;
            health_task.abort();
            for service in std::iter::once("").chain(services) {
                reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
        });
    let outcome = drain::bounded(server, &shutdown).await;
    if let Some(task) = reload_task {
        task.abort();
    }
    match outcome {
        Some(result) => result?,
        None => tracing::warn!(
            grace_secs = shutdown.grace().as_secs_f64(),
            "grace period over, closing the calls still open"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Keeps `services` (and the overall "" entry) SERVING while `check`
/// succeeds and NOT_SERVING while it fails, checking every `every`.
pub async fn watch_health<F, Fut, E>(
    reporter: HealthReporter,
    services: Vec<String>,
    every: Duration,
    check: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut last: Option<bool> = None;
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let healthy = match check().await {
            Ok(()) => true,
            Err(error) => {
                if last != Some(false) {
                    tracing::warn!(%error, "database unreachable, reporting NOT_SERVING");
                }
                false
            }
        };
        if last != Some(healthy) {
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in std::iter::once("").chain(services.iter().map(String::as_str)) {
                reporter.set_service_status(service, status).await;
            }
            if healthy && last.is_some() {
                tracing::info!("database reachable again, reporting SERVING");
            }
            last = Some(healthy);
        }
    }
}

/// gRPC reflection, v1 and v1alpha (grpcurl 1.8 asks for v1alpha), over the
/// Signal Audit contract and the health service.
pub fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(audit_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(audit_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}
