//! Metrics (names, labels and buckets: docs/metrics.md).
//!
//! Instruments are recorded through the `metrics` facade, so the storage
//! crate and the services record without knowing the exporter. The
//! recorder is process-wide ([`install`]) and each service serves it at
//! `GET /metrics` on a port of its own ([`listen`]), a plain HTTP/1.1
//! server next to the gRPC one, so a scraper needs no HTTP/2.
//!
//! The exporter's own listener is not used because it comes with the
//! recorder, one per process, while the integration tests run a writer and
//! a reader in one process, each with its endpoint (both render the one
//! registry there).
//!
//! OTLP: when [`crate::telemetry`] has an OTLP metrics endpoint it hands
//! over a meter ([`export_to`]) before the recorder is installed, and the
//! recorder becomes a fanout (`metrics-util`) of the Prometheus recorder
//! and a bridge to OpenTelemetry instruments (`metrics-opentelemetry`),
//! so every instrument is recorded into both under the same name, labels
//! and buckets, and the meter provider's periodic reader pushes them. The
//! bridge is a small crate (two dependencies already in the tree) that
//! tracks each `opentelemetry` release and, unlike the alternatives for
//! opentelemetry 0.33, keeps `Gauge::increment`/`decrement` (the Ingest
//! slots gauge needs them), descriptions, units and histogram buckets.
//! Without an endpoint the recorder is the Prometheus one alone.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_opentelemetry::{OpenTelemetryMetrics, OpenTelemetryRecorder};
use metrics_util::layers::FanoutBuilder;
use opentelemetry::metrics::Meter;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// gRPC call durations, seconds.
const RPC_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Waits for a pooled connection, seconds.
const POOL_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
];
/// Items per group commit.
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
];
/// Background job runs, seconds.
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Histogram buckets by metric, the same for Prometheus and OTLP.
const BUCKETS: [(&str, &[f64]); 4] = [
    ("rpc_server_duration_seconds", RPC_BUCKETS),
    ("db_client_connection_wait_time_seconds", POOL_WAIT_BUCKETS),
    ("audit_writer_group_commit_size", GROUP_BUCKETS),
    ("audit_job_duration_seconds", JOB_BUCKETS),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static OTLP_METER: OnceLock<Meter> = OnceLock::new();

/// Records every instrument into `meter` too, from [`install`] on (the
/// telemetry set-up calls this when metrics go over OTLP). Too late once
/// the recorder is installed: that is logged, and OTLP gets nothing.
pub fn export_to(meter: Meter) {
    if HANDLE.get().is_some() {
        tracing::warn!("the metrics recorder is already installed; no metrics go over OTLP");
        return;
    }
    if OTLP_METER.set(meter).is_err() {
        tracing::warn!("metrics already go to another meter; this one gets nothing");
    }
}

/// Installs the process's recorder on first call and returns its handle.
/// Instruments registered before this record nothing, so services call it
/// before building anything that registers instruments.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // Only an empty bucket list is refused, and these are constants.
        let builder = BUCKETS
            .into_iter()
            .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
                builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            })
            .unwrap_or_else(|error| {
                tracing::error!(%error, "histogram buckets refused, exporting summaries");
                PrometheusBuilder::new()
            });
        let prometheus = builder.build_recorder();
        let handle = prometheus.handle();
        let installed = match OTLP_METER.get() {
            None => metrics::set_global_recorder(prometheus).map_err(|e| e.to_string()),
            Some(meter) => metrics::set_global_recorder(
                FanoutBuilder::default()
                    .add_recorder(prometheus)
                    .add_recorder(otel_recorder(meter.clone()))
                    .build(),
            )
            .map_err(|e| e.to_string()),
        };
        if let Err(error) = installed {
            tracing::warn!(%error, "a metrics recorder was already installed; /metrics shows only what reaches this one");
        }
        describe();
        handle
    })
}

/// The bridge to OpenTelemetry instruments, with the Prometheus buckets
/// (the SDK's default boundaries are for milliseconds up to 10 000).
fn otel_recorder(meter: Meter) -> OpenTelemetryRecorder {
    let mut recorder = OpenTelemetryRecorder::new(OpenTelemetryMetrics::new(meter));
    for (name, buckets) in BUCKETS {
        recorder.set_histogram_bounds_mut(std::iter::once(name), buckets);
    }
    recorder
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "rpc_server_duration_seconds",
        Unit::Seconds,
        "Duration of gRPC calls (whole stream for streaming calls)"
    );
    describe_gauge!(
        "db_client_connection_count",
        "Connections in the pool by state (idle, used)"
    );
    describe_gauge!(
        "db_client_connection_max",
        "Most connections the pool may open"
    );
    describe_gauge!(
        "db_client_connection_pending_requests",
        "Callers waiting for a pooled connection"
    );
    describe_histogram!(
        "db_client_connection_wait_time_seconds",
        Unit::Seconds,
        "Time spent waiting for a pooled connection"
    );
    describe_counter!(
        "db_client_connection_timeouts_total",
        "Waits for a pooled connection that timed out"
    );
    describe_gauge!("audit_build_info", "Always 1, labelled with the build");
    describe_counter!(
        "audit_reader_replica_calls_total",
        "Calls the reader sent to the replica"
    );
}

/// Sets `audit_build_info` for this service.
pub fn build_info(service_name: &'static str, version: &'static str) {
    metrics::gauge!("audit_build_info", "service_name" => service_name, "version" => version)
        .set(1.0);
}

/// A running `/metrics` endpoint; dropping it stops it.
pub struct MetricsEndpoint {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the recorder (see [`install`]), sets `audit_build_info` and,
/// unless `addr` is `None` (the endpoint is off), serves `GET /metrics`
/// on `addr`. A bind failure is returned, so a wrong address stops the
/// service at start-up rather than leaving it unscraped.
pub async fn listen(
    addr: Option<SocketAddr>,
    service_name: &'static str,
    version: &'static str,
) -> std::io::Result<Option<MetricsEndpoint>> {
    let handle = install();
    build_info(service_name, version);
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, "serving /metrics");
    let task = tokio::spawn(accept(listener, handle));
    Ok(Some(MetricsEndpoint { addr, task }))
}

async fn accept(listener: TcpListener, handle: &'static PrometheusHandle) {
    // Histogram samples are drained into their buckets at each render;
    // upkeep bounds what piles up when nobody scrapes.
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let stream = tokio::select! {
            _ = upkeep.tick() => {
                handle.run_upkeep();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "metrics accept failed");
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| async move {
                Ok::<_, std::convert::Infallible>(answer(handle, &request))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics connection failed");
            }
        });
    }
}

fn answer<B>(handle: &PrometheusHandle, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// `AUDIT_METRICS_LISTEN`: where `/metrics` is served, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;

    /// An address (`0.0.0.0:9090`), or empty (or `off`) for no endpoint.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "" | "off" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|addr| Self(Some(addr)))
                .map_err(|e| format!("{addr:?} is not an address (host:port) or empty: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
    use std::sync::{Arc, Mutex};

    /// Keeps each export as lines: `name{k=v,…} value`, and for
    /// histograms `name{…} count=N sum=S bounds=[…]`.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    fn labels<'a>(attributes: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> String {
        let mut pairs: Vec<String> = attributes
            .map(|kv| format!("{}={}", kv.key.as_str(), kv.value.as_str()))
            .collect();
        pairs.sort();
        pairs.join(",")
    }

    impl PushMetricExporter for Capture {
        async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
            let mut lines = Vec::new();
            for metric in metrics.scope_metrics().flat_map(|s| s.metrics()) {
                let name = metric.name();
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Gauge(gauge)) => {
                        for p in gauge.data_points() {
                            lines.push(format!(
                                "{name}{{{}}} {}",
                                labels(p.attributes()),
                                p.value()
                            ));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        for p in sum.data_points() {
                            lines.push(format!(
                                "{name}{{{}}} {}",
                                labels(p.attributes()),
                                p.value()
                            ));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                        for p in histogram.data_points() {
                            lines.push(format!(
                                "{name}{{{}}} count={} sum={} bounds={:?}",
                                labels(p.attributes()),
                                p.count(),
                                p.sum(),
                                p.bounds().collect::<Vec<_>>()
                            ));
                        }
                    }
                    other => lines.push(format!("{name} unexpected {other:?}")),
                }
            }
            if let Ok(mut captured) = self.0.lock() {
                *captured = lines;
            }
            Ok(())
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }

        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    /// What the OTLP side of the fanout exports for the facade calls the
    /// services make: gauges that go up and down (Ingest slots), counters
    /// from 0, histograms with the Prometheus buckets and the unit.
    #[test]
    fn otel_bridge_records_what_prometheus_does() {
        let capture = Capture::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(capture.clone()).build())
            .build();
        let recorder = otel_recorder(provider.meter("test"));
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::gauge!("audit_writer_ingest_streams_in_use").set(0.0);
            metrics::gauge!("audit_writer_ingest_streams_in_use").increment(1.0);
            metrics::gauge!("audit_writer_ingest_streams_in_use").increment(1.0);
            metrics::gauge!("audit_writer_ingest_streams_in_use").decrement(1.0);
            metrics::counter!("audit_writer_refusals_total", "reason" => "queue_full").increment(0);
            metrics::counter!("audit_writer_refusals_total", "reason" => "ingest_slots")
                .increment(2);
            let call = metrics::histogram!(
                "rpc_server_duration_seconds",
                "rpc_method" => "RecordSignal",
                "rpc_grpc_status_code" => "0"
            );
            call.record(0.003);
            call.record(0.2);
        });
        assert!(provider.force_flush().is_ok());
        let lines = capture.0.lock().map(|l| l.clone()).unwrap_or_default();
        let has = |line: &str| assert!(lines.iter().any(|l| l == line), "{line} in {lines:#?}");
        has("audit_writer_ingest_streams_in_use{} 1");
        has("audit_writer_refusals_total{reason=queue_full} 0");
        has("audit_writer_refusals_total{reason=ingest_slots} 2");
        has(&format!(
            "rpc_server_duration_seconds{{rpc_grpc_status_code=0,rpc_method=RecordSignal}} count=2 sum={} bounds={RPC_BUCKETS:?}",
            0.003 + 0.2
        ));
        assert!(provider.shutdown().is_ok());
    }

    #[test]
    fn listen_address_or_off() {
        let parsed = |v: &str| v.parse::<MetricsListen>().map(|l| l.0);
        assert_eq!(parsed(""), Ok(None));
        assert_eq!(parsed("off"), Ok(None));
        assert_eq!(
            parsed("127.0.0.1:15091"),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 15091))))
        );
        assert!(parsed("localhost").is_err());
    }
}
