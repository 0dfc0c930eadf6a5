//! OTLP export and W3C trace context, end to end: a collector in this test
//! receives the writer's spans, and the span of a call made with a
//! `traceparent` header belongs to the caller's trace.
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
use opentelemetry_proto::tonic::trace::v1::Span;
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
    let telemetry =
        audit_server::telemetry::init("audit-writer-test", false, Some(&endpoint)).unwrap();

    let app = TestApp::start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(pb::RecordSignalRequest {
        signal: Some(new_signal("AAPL")),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    app.writer.clone().record_signal(request).await.unwrap();

    // Dropping the guard flushes the batch exporter.
    tokio::task::spawn_blocking(move || drop(telemetry))
        .await
        .unwrap();
    let mut found = None;
    for _ in 0..100 {
        found = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| hex(&s.trace_id) == trace_id && s.name == "grpc")
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let span = found.unwrap_or_else(|| {
        let names: Vec<String> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}", s.name, hex(&s.trace_id)))
            .collect();
        panic!("no exported grpc span in the caller's trace; exported: {names:?}")
    });
    assert_eq!(
        hex(&span.parent_span_id),
        parent_id,
        "the call's span is a child of the caller's span"
    );
    let spans = collector.spans.lock().unwrap();
    assert!(
        spans
            .iter()
            .any(|s| hex(&s.trace_id) == trace_id && s.name == "record_signal"),
        "handler spans nest under the call span"
    );
}
