//! OTLP metric export, end to end: a collector in this test receives the
//! writer's and the reader's metrics on the periodic reader's schedule —
//! the RPC duration histogram by method and status code with the
//! Prometheus buckets, gauges and counters, under the same resource as
//! the spans — while `/metrics` goes on serving the same counts, and the
//! last export happens when the telemetry guard is dropped (shutdown).
//!
//! A test binary of its own with one test: the tracing subscriber, the
//! meter handed to the metrics recorder and the recorder itself are
//! process-global, and the call counts are compared exactly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_server::metrics::MetricsListen;
use audit_server::telemetry::{MetricsExporter, TelemetryArgs};
use integration_tests::{TestApp, free_port, wait_until};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::TcpListenerStream;

/// Receives both signals: the metric exports in order of arrival, and the
/// resource the spans came with.
#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    span_resources: Arc<Mutex<Vec<Resource>>>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.exports.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut resources = self.span_resources.lock().unwrap();
        for spans in request.into_inner().resource_spans {
            resources.extend(spans.resource);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn export_count(&self) -> usize {
        self.exports.lock().unwrap().len()
    }

    /// The latest export, when it has a series of `name` with `labels`
    /// (exports are cumulative: the latest holds everything so far).
    fn latest_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<Export> {
        let export = Export(self.exports.lock().unwrap().last()?.clone());
        let found = export.metric(name).is_some_and(|metric| {
            points(metric)
                .iter()
                .any(|attributes| has(attributes, labels))
        });
        found.then_some(export)
    }
}

struct Export(ExportMetricsServiceRequest);

/// A resource's attributes in key order (the exporters iterate a map).
fn sorted(resource: &Resource) -> Vec<String> {
    let mut attributes: Vec<String> = resource
        .attributes
        .iter()
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect();
    attributes.sort();
    attributes
}

impl Export {
    fn resource(&self) -> Resource {
        assert_eq!(self.0.resource_metrics.len(), 1, "one resource per export");
        self.0.resource_metrics[0].resource.clone().unwrap()
    }

    fn metric(&self, name: &str) -> Option<&Metric> {
        self.0
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .find(|m| m.name == name)
    }

    /// The one histogram point of `name` with `labels`.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> (HistogramDataPoint, i32) {
        let metric = self.metric(name).unwrap_or_else(|| panic!("no {name}"));
        let Some(Data::Histogram(histogram)) = &metric.data else {
            panic!("{name} is no histogram: {:?}", metric.data);
        };
        let matching: Vec<&HistogramDataPoint> = histogram
            .data_points
            .iter()
            .filter(|p| has(&p.attributes, labels))
            .collect();
        assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:?}");
        (matching[0].clone(), histogram.aggregation_temporality)
    }

    /// The value of the one gauge point of `name` with `labels`.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let metric = self.metric(name).unwrap_or_else(|| panic!("no {name}"));
        let Some(Data::Gauge(gauge)) = &metric.data else {
            panic!("{name} is no gauge: {:?}", metric.data);
        };
        value(name, labels, &gauge.data_points)
    }

    /// The value of the one point of the cumulative, monotonic sum `name`
    /// with `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let metric = self.metric(name).unwrap_or_else(|| panic!("no {name}"));
        let Some(Data::Sum(sum)) = &metric.data else {
            panic!("{name} is no sum: {:?}", metric.data);
        };
        assert!(sum.is_monotonic, "{name} is a counter");
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32,
            "{name}: totals since start-up, as Prometheus has them"
        );
        value(name, labels, &sum.data_points)
    }
}

fn points(metric: &Metric) -> Vec<&[KeyValue]> {
    match &metric.data {
        Some(Data::Histogram(h)) => h.data_points.iter().map(|p| &p.attributes[..]).collect(),
        Some(Data::Gauge(g)) => g.data_points.iter().map(|p| &p.attributes[..]).collect(),
        Some(Data::Sum(s)) => s.data_points.iter().map(|p| &p.attributes[..]).collect(),
        _ => Vec::new(),
    }
}

fn string(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<&str> {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn has(attributes: &[KeyValue], labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(key, value)| {
        attributes
            .iter()
            .any(|kv| kv.key == *key && string(&kv.value) == Some(value))
    })
}

fn value(name: &str, labels: &[(&str, &str)], points: &[NumberDataPoint]) -> f64 {
    let matching: Vec<f64> = points
        .iter()
        .filter(|p| has(&p.attributes, labels))
        .map(|p| match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => panic!("{name} {labels:?} has no value"),
        })
        .collect();
    assert_eq!(matching.len(), 1, "{name} {labels:?}: {points:?}");
    matching[0]
}

/// `/metrics` of the writer, as Prometheus scrapes it.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

const WRITER: &str = "signal_audit.v1.SignalWriterService";
const READER: &str = "signal_audit.v1.SignalReaderService";
const RPC: &str = "rpc_server_duration_seconds";

fn call(
    service: &'static str,
    method: &'static str,
    code: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("rpc_service", service),
        ("rpc_method", method),
        ("rpc_grpc_status_code", code),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_pushed_over_otlp_next_to_prometheus() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(collector.clone()))
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let args = TelemetryArgs {
        otlp_endpoint: Some(format!("http://{addr}")),
        metrics_exporter: MetricsExporter::Otlp,
        // Long enough that the call made just before shutdown is, most of
        // the time, exported by the shutdown alone; short for a test.
        metric_export_interval_ms: 1_000,
        ..TelemetryArgs::off()
    };
    let telemetry = args.init("audit-otlp-test").unwrap();

    let writer_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let app = TestApp::start_with(|writer, _| {
        writer.metrics_listen = MetricsListen(Some(writer_metrics));
    })
    .await;
    let (signal, token) = app.record_signal("AAPL").await;
    let refused = app
        .writer
        .clone()
        .record_signal(pb::RecordSignalRequest { signal: None })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    app.reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: signal.signal_id.clone(),
            consistency_token: Some(token),
        })
        .await
        .unwrap();

    // The periodic reader pushes them without being asked.
    let export = wait_until(
        "an OTLP export with the calls",
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || {
            collector
                .latest_with(RPC, &call(WRITER, "RecordSignal", "3"))
                .filter(|e| {
                    e.metric(RPC).is_some_and(|m| {
                        points(m)
                            .iter()
                            .any(|a| has(a, &call(READER, "GetSignal", "0")))
                    })
                })
        },
    )
    .await;

    let (recorded, temporality) = export.histogram(RPC, &call(WRITER, "RecordSignal", "0"));
    assert_eq!(recorded.count, 1, "{recorded:?}");
    assert_eq!(temporality, AggregationTemporality::Cumulative as i32);
    assert!(recorded.sum.unwrap() > 0.0, "{recorded:?}");
    assert_eq!(
        recorded.explicit_bounds,
        [
            0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
        ],
        "the buckets /metrics has, not the SDK's defaults"
    );
    assert_eq!(export.metric(RPC).unwrap().unit, "s");
    assert_eq!(
        export
            .histogram(RPC, &call(WRITER, "RecordSignal", "3"))
            .0
            .count,
        1
    );
    assert_eq!(
        export
            .histogram(RPC, &call(READER, "GetSignal", "0"))
            .0
            .count,
        1
    );

    // Gauges: set once at start-up (build info, the pool's size) or
    // sampled (connections by state, the replica's health).
    for service in ["audit-writer", "audit-reader"] {
        assert_eq!(
            export.gauge("audit_build_info", &[("service_name", service)]),
            1.0
        );
    }
    assert_eq!(
        export.gauge("db_client_connection_max", &[("pool_name", "primary")]),
        24.0
    );
    assert_eq!(
        export.gauge("db_client_connection_max", &[("pool_name", "replica")]),
        8.0
    );
    assert_eq!(export.gauge("audit_writer_ingest_streams_in_use", &[]), 0.0);
    // Counters: exported from start-up with 0, and counting.
    assert_eq!(
        export.counter("audit_writer_refusals_total", &[("reason", "queue_full")]),
        0.0
    );
    assert!(
        export.counter(
            "audit_job_runs_total",
            &[("job_name", "rollup_refresh"), ("outcome", "ok")]
        ) >= 1.0,
        "every job runs once at start-up"
    );

    // The resource is the spans' (service.name from OTEL_SERVICE_NAME, else
    // the name given to init).
    let resource = export.resource();
    let service_name = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| string(&kv.value))
        .unwrap_or_default()
        .to_owned();
    let expected = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "audit-otlp-test".to_owned());
    assert_eq!(service_name, expected);

    // Prometheus goes on serving the same counts from the same calls.
    let scraped = scrape(writer_metrics).await;
    let line = scraped
        .lines()
        .find(|l| {
            l.starts_with("rpc_server_duration_seconds_count{")
                && l.contains("rpc_method=\"RecordSignal\"")
                && l.contains("rpc_grpc_status_code=\"3\"")
        })
        .unwrap_or_else(|| panic!("no RecordSignal INVALID_ARGUMENT count in {scraped}"));
    assert!(line.ends_with(" 1"), "{line}");

    // Shutdown exports what the last interval has not: a call made just
    // before it is in an export as soon as the guard is dropped.
    let missing = app
        .reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: uuid::Uuid::new_v4().to_string(),
            consistency_token: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let before = collector.export_count();
    // Dropping blocks until the last export is answered; off the runtime's
    // threads, which drive the exporter's channel.
    tokio::task::spawn_blocking(move || drop(telemetry))
        .await
        .unwrap();
    assert!(collector.export_count() > before, "shutdown exported");
    let last = collector
        .latest_with(RPC, &call(READER, "GetSignal", "5"))
        .expect("the last export has the call made just before shutdown");
    assert_eq!(
        last.histogram(RPC, &call(READER, "GetSignal", "5")).0.count,
        1
    );
    assert_eq!(sorted(&last.resource()), sorted(&resource));

    // Same resource as the spans (exported by the same shutdown).
    let span_resources = collector.span_resources.lock().unwrap().clone();
    assert!(!span_resources.is_empty(), "spans were exported");
    assert!(
        span_resources
            .iter()
            .all(|r| sorted(r) == sorted(&resource)),
        "spans: {span_resources:?}, metrics: {resource:?}"
    );
}
