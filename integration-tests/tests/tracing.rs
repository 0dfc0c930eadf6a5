//! OTLP export and W3C trace context, end to end: a collector in this test
//! receives the writer's and the reader's spans; the span of a call made
//! with a `traceparent` header belongs to the caller's trace, carries the
//! gRPC status code (and an error status for server errors only), and the
//! database work shows as child spans named by statement kind.
//!
//! A test binary of its own: the tracing subscriber is process-global.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use integration_tests::{TestApp, new_signal};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request carrying the W3C context of a caller's span.
fn traced<T>(message: T, trace_id: &str, parent_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    request
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn status_code(span: &Span) -> i32 {
    span.status.as_ref().map_or(0, |s| s.code)
}

/// The exported spans of one trace, once `name` is among them.
async fn trace(collector: &Collector, trace_id: &str, name: &str) -> Vec<Span> {
    for _ in 0..100 {
        let spans: Vec<Span> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        if spans.iter().any(|s| s.name == name) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<String> = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s.name, hex(&s.trace_id)))
        .collect();
    panic!("no span {name} in trace {trace_id}; exported: {names:?}")
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

/// `span` descends from `ancestor` within `spans`.
fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut parent = span.parent_span_id.clone();
    for _ in 0..spans.len() {
        if parent == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == parent) {
            Some(next) => parent = next.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

const RECORD_SIGNAL: &str = "signal_audit.v1.SignalWriterService/RecordSignal";
const GET_SIGNAL: &str = "signal_audit.v1.SignalReaderService/GetSignal";
const ERROR: i32 = StatusCode::Error as i32;

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_and_continue_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let endpoint = format!("http://{addr}");
    // Spans only: this collector has no metrics service (tests/otlp_metrics.rs).
    let telemetry = audit_server::telemetry::TelemetryArgs {
        otlp_endpoint: Some(endpoint),
        metrics_exporter: audit_server::telemetry::MetricsExporter::None,
        ..audit_server::telemetry::TelemetryArgs::off()
    }
    .init("audit-writer-test")
    .unwrap();

    let app = TestApp::start().await;
    let parent_id = "00f067aa0ba902b7";
    // The writer: a good call and a refused one.
    let recorded = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .writer
        .clone()
        .record_signal(traced(
            pb::RecordSignalRequest {
                signal: Some(new_signal("AAPL")),
            },
            recorded,
            parent_id,
        ))
        .await
        .unwrap()
        .into_inner();
    let signal = response.signal.unwrap();
    let invalid = "4bf92f3577b34da6a3ce929d0e0e4737";
    app.writer
        .clone()
        .record_signal(traced(
            pb::RecordSignalRequest { signal: None },
            invalid,
            parent_id,
        ))
        .await
        .unwrap_err();
    // The reader: found (after the write), not found, and a token the
    // replica cannot reach before the deadline.
    let found = "5bf92f3577b34da6a3ce929d0e0e4736";
    app.reader
        .clone()
        .get_signal(traced(
            pb::GetSignalRequest {
                signal_id: signal.signal_id.clone(),
                consistency_token: response.consistency_token,
            },
            found,
            parent_id,
        ))
        .await
        .unwrap();
    let missing = "5bf92f3577b34da6a3ce929d0e0e4737";
    app.reader
        .clone()
        .get_signal(traced(
            pb::GetSignalRequest {
                signal_id: uuid::Uuid::new_v4().to_string(),
                consistency_token: None,
            },
            missing,
            parent_id,
        ))
        .await
        .unwrap_err();
    let unreachable = "5bf92f3577b34da6a3ce929d0e0e4738";
    let mut request = traced(
        pb::GetSignalRequest {
            signal_id: signal.signal_id.clone(),
            consistency_token: Some(pb::ConsistencyToken {
                lsn: "FFFFFFF/0".into(),
            }),
        },
        unreachable,
        parent_id,
    );
    request.set_timeout(Duration::from_millis(300));
    let status = app.reader.clone().get_signal(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // Dropping the guard flushes the batch exporter.
    tokio::task::spawn_blocking(move || drop(telemetry))
        .await
        .unwrap();

    let spans = trace(&collector, recorded, RECORD_SIGNAL).await;
    let call = named(&spans, RECORD_SIGNAL);
    assert_eq!(
        hex(&call.parent_span_id),
        parent_id,
        "the call's span is a child of the caller's span"
    );
    assert_eq!(call.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(call, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    assert_eq!(
        attribute(call, "rpc.service"),
        Some(Value::StringValue(
            "signal_audit.v1.SignalWriterService".into()
        ))
    );
    assert_ne!(status_code(call), ERROR);
    assert!(
        descends(&spans, named(&spans, "record_signal"), call),
        "handler spans nest under the call span"
    );
    // The group commit that carried the write, and its statement, are in
    // the caller's trace.
    let insert = named(&spans, "INSERT signals signal_events");
    assert!(descends(&spans, insert, call));
    assert_eq!(insert.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(insert, "db.operation.name"),
        Some(Value::StringValue("INSERT".into()))
    );
    assert_eq!(
        attribute(insert, "db.system.name"),
        Some(Value::StringValue("postgresql".into()))
    );

    let spans = trace(&collector, invalid, RECORD_SIGNAL).await;
    let call = named(&spans, RECORD_SIGNAL);
    assert_eq!(
        attribute(call, "rpc.grpc.status_code"),
        Some(Value::IntValue(3))
    );
    assert_ne!(
        status_code(call),
        ERROR,
        "a caller's mistake is no server error"
    );

    let spans = trace(&collector, found, GET_SIGNAL).await;
    let call = named(&spans, GET_SIGNAL);
    assert_eq!(hex(&call.parent_span_id), parent_id);
    assert_eq!(
        attribute(call, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    assert!(descends(&spans, named(&spans, "get_signal"), call));
    let select = named(&spans, "SELECT signals");
    assert!(descends(&spans, select, call));
    assert_eq!(
        attribute(select, "db.operation.name"),
        Some(Value::StringValue("SELECT".into()))
    );
    assert!(
        select
            .attributes
            .iter()
            .all(|kv| !format!("{:?}", kv.value).contains(&signal.signal_id)),
        "no parameter values on database spans"
    );

    let spans = trace(&collector, missing, GET_SIGNAL).await;
    let call = named(&spans, GET_SIGNAL);
    assert_eq!(
        attribute(call, "rpc.grpc.status_code"),
        Some(Value::IntValue(5))
    );
    assert_ne!(status_code(call), ERROR);

    let spans = trace(&collector, unreachable, GET_SIGNAL).await;
    let call = named(&spans, GET_SIGNAL);
    assert_eq!(
        attribute(call, "rpc.grpc.status_code"),
        Some(Value::IntValue(14))
    );
    assert_eq!(
        status_code(call),
        ERROR,
        "UNAVAILABLE marks the span as an error"
    );
}
