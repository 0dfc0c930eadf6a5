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

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
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
    /// OTLP/gRPC collector for spans (e.g. http://otel-collector:4317, or
    /// https://… for TLS); off when unset. Never shown by --help.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true,
        hide_env_values = true
    )]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryArgs {
    pub fn init(&self, service_name: &'static str) -> Result<Telemetry, TelemetryError> {
        init(service_name, self.log_json, self.otlp_endpoint.as_deref())
    }
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
/// JSON lines when `json` is set, trace ids on log lines, and OTLP/gRPC
/// export to `otlp_endpoint` when one is given (the services take it from
/// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable). `service_name` is
/// the default for `service.name`.
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
    let mut provider = SdkTracerProvider::builder().with_resource(resource(service_name));
    if let Some(endpoint) = otlp_endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        provider = provider.with_batch_exporter(span_exporter(endpoint)?);
    }
    let provider = provider.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry {
        provider: Some(provider),
    })
}

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
    if endpoint.starts_with("https://") {
        // Without roots the exporter's default TLS trusts nothing.
        let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE") {
            let pem = std::fs::read(&path).map_err(|error| TelemetryError::Certificate {
                path: path.to_string_lossy().into_owned(),
                error,
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.with_tls_config(tls);
    }
    Ok(builder.build()?)
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
