//! Logs and traces. Logs go to stderr through `tracing`, each line inside a
//! trace carrying its `trace_id`. Spans always belong to an OpenTelemetry
//! trace (the caller's, when it sent a W3C `traceparent`), so log lines of
//! one call share a trace id even when nothing is exported. When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over
//! OTLP/gRPC (TLS for `https://`, verified against the system's roots or
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`); when it is not, no exporter is built
//! at all, so nothing retries or complains. The resource comes from the
//! SDK's detectors: `OTEL_SERVICE_NAME`, then `OTEL_RESOURCE_ATTRIBUTES`,
//! then the binary's name.
//!
//! Metrics go over OTLP too when an endpoint is set
//! (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, else the one above) and
//! `OTEL_METRICS_EXPORTER` is not `none`: a meter provider with the same
//! resource and a periodic reader (`OTEL_METRIC_EXPORT_INTERVAL`) is handed
//! to [`crate::metrics`], whose recorder then feeds it as well as the
//! Prometheus endpoint.

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Options every service binary shares; flatten into its clap `Cli`.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "AUDIT_LOG_JSON", default_value_t = false, global = true)]
    pub log_json: bool,
    /// OTLP/gRPC collector for spans and metrics (e.g.
    /// http://otel-collector:4317, or https://… for TLS); off when unset.
    /// Never shown by --help.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true,
        hide_env_values = true
    )]
    pub otlp_endpoint: Option<String>,
    /// OTLP/gRPC collector for metrics only, instead of
    /// OTEL_EXPORTER_OTLP_ENDPOINT (set alone, it exports metrics but no
    /// spans). Never shown by --help.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        global = true,
        hide_env_values = true
    )]
    pub otlp_metrics_endpoint: Option<String>,
    /// `otlp` pushes the metrics to the OTLP endpoint when one is set;
    /// `none` keeps them on /metrics only (e.g. when the collector scrapes
    /// it already, which would count everything twice).
    #[arg(
        long,
        env = "OTEL_METRICS_EXPORTER",
        value_enum,
        default_value_t = MetricsExporter::Otlp,
        global = true
    )]
    pub metrics_exporter: MetricsExporter,
    /// Milliseconds between two OTLP metric exports (OpenTelemetry's
    /// default, 60000); a last export happens at shutdown.
    #[arg(
        long,
        env = "OTEL_METRIC_EXPORT_INTERVAL",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub metric_export_interval_ms: u64,
}

/// `OTEL_METRICS_EXPORTER`: the values of the specification this service
/// supports (it has no console exporter, and Prometheus is always served).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsExporter {
    Otlp,
    None,
}

impl TelemetryArgs {
    /// The options of a service that exports nothing over OTLP, to adjust
    /// in tests.
    pub fn off() -> Self {
        Self {
            log_json: false,
            otlp_endpoint: None,
            otlp_metrics_endpoint: None,
            metrics_exporter: MetricsExporter::Otlp,
            metric_export_interval_ms: 60_000,
        }
    }

    /// Installs logging and tracing, and OTLP metric export; see [`init`].
    pub fn init(&self, service_name: &'static str) -> Result<Telemetry, TelemetryError> {
        init(service_name, self)
    }

    /// Where spans go, if anywhere.
    fn trace_endpoint(&self) -> Option<&str> {
        set(self.otlp_endpoint.as_deref())
    }

    /// Where metrics go, if anywhere.
    fn metrics_endpoint(&self) -> Option<&str> {
        match self.metrics_exporter {
            MetricsExporter::None => None,
            MetricsExporter::Otlp => set(self.otlp_metrics_endpoint.as_deref())
                .or_else(|| set(self.otlp_endpoint.as_deref())),
        }
    }
}

/// An endpoint variable counts as unset when empty (Helm and compose files
/// often set variables to "").
fn set(endpoint: Option<&str>) -> Option<&str> {
    endpoint.map(str::trim).filter(|e| !e.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot read OTEL_EXPORTER_OTLP_CERTIFICATE {path}: {error}")]
    Certificate { path: String, error: std::io::Error },
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the OTLP pipelines alive; dropping it exports the metrics one last
/// time and flushes the spans still queued.
///
/// Both shutdowns block until their export thread is done, while that
/// thread's gRPC channel is driven by the tokio runtime: drop it where the
/// runtime's workers are free, as `main` (the runtime's `block_on` thread)
/// does, never inside a spawned task of a current-thread runtime.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Metrics first: their last export may record nothing new, but the
        // spans' flush should not delay it past a pod's grace period.
        if let Some(provider) = self.meter_provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "last OTLP metric export failed");
        }
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filtering (default `info`),
/// JSON lines when `log_json` is set, trace ids on log lines, and OTLP/gRPC
/// export of spans when `otlp_endpoint` is set. Sets up OTLP export of the
/// metrics when there is a metrics endpoint (see [`TelemetryArgs`]); call
/// it before [`crate::metrics::listen`] installs the recorder.
/// `service_name` is the default for `service.name`.
pub fn init(service_name: &'static str, args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if args.log_json {
        tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceId {
                inner: format::Format::default().json(),
                json: true,
            })
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .event_format(WithTraceId {
                inner: format::Format::default(),
                json: false,
            })
            .with_writer(std::io::stderr)
            .boxed()
    };
    let resource = resource(service_name);
    let mut provider = SdkTracerProvider::builder().with_resource(resource.clone());
    if let Some(endpoint) = args.trace_endpoint() {
        provider = provider.with_batch_exporter(span_exporter(endpoint)?);
    }
    let provider = provider.build();
    let meter_provider = match args.metrics_endpoint() {
        Some(endpoint) => {
            let reader = PeriodicReader::builder(metric_exporter(endpoint)?)
                .with_interval(Duration::from_millis(args.metric_export_interval_ms))
                .build();
            let meter_provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_reader(reader)
                .build();
            crate::metrics::export_to(meter_provider.meter(METER_NAME));
            Some(meter_provider)
        }
        None => None,
    };
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry {
        provider: Some(provider),
        meter_provider,
    })
}

/// The instrumentation scope of every metric: they are all recorded
/// through the `metrics` facade, whichever crate records them.
const METER_NAME: &str = "signal-audit";

/// The SDK's detectors (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`,
/// SDK attributes). `OTEL_SERVICE_NAME` wins over a `service.name` in the
/// attributes, as the specification asks; without either, `default_name`.
fn resource(default_name: &'static str) -> opentelemetry_sdk::Resource {
    let named = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty());
    let unnamed = opentelemetry_sdk::Resource::builder()
        .build()
        .get(&opentelemetry::Key::new("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    let detected = opentelemetry_sdk::Resource::builder();
    match named {
        Some(name) => detected.with_service_name(name).build(),
        None if unnamed => detected.with_service_name(default_name).build(),
        None => detected.build(),
    }
}

fn span_exporter(endpoint: &str) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if let Some(tls) = tls_for(endpoint)? {
        builder = builder.with_tls_config(tls);
    }
    Ok(builder.build()?)
}

/// Cumulative temporality (the exporter's default), as Prometheus has it:
/// each export carries the totals since start-up.
fn metric_exporter(endpoint: &str) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if let Some(tls) = tls_for(endpoint)? {
        builder = builder.with_tls_config(tls);
    }
    Ok(builder.build()?)
}

/// TLS for an `https://` endpoint: the system's roots, plus
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` when set.
fn tls_for(endpoint: &str) -> Result<Option<tonic::transport::ClientTlsConfig>, TelemetryError> {
    if !endpoint.starts_with("https://") {
        return Ok(None);
    }
    // Without roots the exporter's default TLS trusts nothing.
    let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
    if let Some(path) = std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE") {
        let pem = std::fs::read(&path).map_err(|error| TelemetryError::Certificate {
            path: path.to_string_lossy().into_owned(),
            error,
        })?;
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    Ok(Some(tls))
}

/// Adds the trace id of the span the event happens in: a `trace_id` key
/// first in a JSON line, `trace_id=…` at the end of a text line (at the
/// start when the line is coloured, since colours cannot be buffered).
struct WithTraceId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // The OpenTelemetry layer makes the entered span's context current.
        let context = opentelemetry::Context::current();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        let trace_id = span_context.trace_id();
        if !self.json && writer.has_ansi_escapes() {
            write!(writer, "trace_id={trace_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match (self.json, line.strip_prefix('{')) {
            (true, Some(rest)) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            _ => writeln!(
                writer,
                "{} trace_id={trace_id}",
                line.trim_end_matches('\n')
            ),
        }
    }
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
///
/// Named and attributed after OpenTelemetry's RPC conventions
/// (`signal_audit.v1.SignalWriterService/RecordSignal`, `rpc.service`,
/// `rpc.method`); `rpc.grpc.status_code` and, for server errors,
/// `otel.status_code = ERROR` are recorded when the call ends (see
/// [`crate::rpc_metrics`]).
pub fn grpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "grpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// The trace id the current span belongs to (all zeroes outside any span).
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt;
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What one event inside a span, and one outside any, log as.
    fn logged(json: bool) -> (String, String) {
        let lines = Lines::default();
        let writer = lines.clone();
        let make_writer = move || writer.clone();
        let fmt = if json {
            tracing_subscriber::fmt::layer()
                .json()
                .event_format(WithTraceId {
                    inner: format::Format::default().json(),
                    json: true,
                })
                .with_writer(make_writer)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .event_format(WithTraceId {
                    inner: format::Format::default(),
                    json: false,
                })
                .with_ansi(false)
                .with_writer(make_writer)
                .boxed()
        };
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(fmt)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call");
            let trace_id = span.context().span().span_context().trace_id();
            span.in_scope(|| tracing::info!("inside"));
            tracing::info!("outside");
            trace_id.to_string()
        });
        let text = String::from_utf8(lines.0.lock().map(|l| l.clone()).unwrap_or_default())
            .unwrap_or_default();
        (text, trace_id)
    }

    #[test]
    fn text_lines_in_a_trace_end_with_its_id() {
        let (text, trace_id) = logged(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("inside"), "{text}");
        assert!(
            lines[0].ends_with(&format!(" trace_id={trace_id}")),
            "{text}"
        );
        assert!(!lines[1].contains("trace_id"), "{text}");
    }

    #[test]
    fn json_lines_in_a_trace_carry_its_id() {
        let (text, trace_id) = logged(true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(&format!("{{\"trace_id\":\"{trace_id}\",")),
            "{text}"
        );
        assert!(lines[0].ends_with('}'), "{text}");
        assert!(!lines[1].contains("trace_id"), "{text}");
    }
}
