//! What both services share around their gRPC handlers: logging and tracing
//! set-up, the caller's W3C trace context, health reporting from real
//! database state, and the shutdown signal.
//!
//! Logs go to stderr through `tracing`. When `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, spans are also exported over OTLP/gRPC; when it is not, no
//! exporter is built at all, so nothing retries or complains.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::future::Future;
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Options every service binary shares; flatten into its clap `Cli`.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "AUDIT_LOG_JSON", default_value_t = false, global = true)]
    pub log_json: bool,
    /// OTLP/gRPC collector for spans (e.g. http://otel-collector:4317); off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryArgs {
    pub fn init(&self, service_name: &'static str) -> Result<Telemetry, TelemetryError> {
        init(service_name, self.log_json, self.otlp_endpoint.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `routes` on `listener` next to health and reflection, one span per
/// call, until `shutdown` resolves. `services` report SERVING only while
/// `check` (a database ping) succeeds. On shutdown: NOT_SERVING, stop
/// accepting, let in-flight calls finish, return.
pub async fn serve<F, Fut, E>(
    services: &[&'static str],
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    health_every: Duration,
    check: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + 'static,
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
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        ?services,
        "serving"
    );
    tonic::transport::Server::builder()
        .trace_fn(grpc_span)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // TCP_NODELAY on every accepted socket: with Nagle on, a small
            // response waits for the client's delayed ACK (about 40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                health_task.abort();
                for service in std::iter::once("").chain(services) {
                    reporter
                        .set_service_status(service, ServingStatus::NotServing)
                        .await;
                }
            },
        )
        .await?;
    tracing::info!("stopped");
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the OTLP pipeline alive; dropping it flushes the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filtering (default `info`),
/// JSON lines when `json` is set, and OTLP/gRPC export to `otlp_endpoint`
/// when one is given (the services take it from the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` variable).
pub fn init(
    service_name: &'static str,
    json: bool,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = match otlp_endpoint.map(str::trim) {
        Some(endpoint) if !endpoint.is_empty() => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name)
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        _ => None,
    };
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name)));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one gRPC call, a child of the caller's trace when the
/// request carries a W3C `traceparent` header (gRPC metadata is HTTP/2
/// headers). Pass to `tonic::transport::Server::trace_fn`.
pub fn grpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        rpc.method = %request.uri().path(),
        otel.kind = "server",
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// The trace id the current span belongs to (all zeroes without OTLP export).
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
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

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested: refusing new calls, finishing the ones in flight");
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
