//! The RPC layer: `rpc_server_duration_seconds` by service, method and gRPC
//! status code, and the status code on every call's span.
//!
//! A call ends with its `grpc-status`: in the response headers when the
//! handler failed before answering (a "trailers-only" response), otherwise
//! in the trailers after the last message. So the response body is wrapped
//! and the call is measured when the trailers go out — for a stream, after
//! its last message — or when the body is dropped without them (the client
//! went away: CANCELLED). The call's span is held until then too, so a
//! streaming call's span covers the whole stream.
//!
//! Only the methods of the Signal Audit contract are counted (not health
//! or reflection); a path outside it is not a label value, since any client
//! can send any path.

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tonic::Code;

/// `rpc_grpc_status_code` values: the code as a decimal string.
const CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// `/package.Service/Method` → (service, method) for every method of the
/// contract, read from its file descriptor set once per process.
fn methods() -> &'static HashMap<String, (&'static str, &'static str)> {
    static METHODS: OnceLock<HashMap<String, (&'static str, &'static str)>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods = HashMap::new();
        let set = match prost_types::FileDescriptorSet::decode(audit_proto::FILE_DESCRIPTOR_SET) {
            Ok(set) => set,
            Err(error) => {
                tracing::error!(%error, "cannot read the contract's descriptors; no RPC metrics");
                return methods;
            }
        };
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                // A fixed set of names, once per process: leaked so labels
                // borrow them instead of allocating per call.
                let full: &'static str =
                    Box::leak(format!("{package}.{}", service.name()).into_boxed_str());
                for method in &service.method {
                    let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                    methods.insert(format!("/{full}/{name}"), (full, name));
                }
            }
        }
        methods
    })
}

/// Codes that mean the server failed (OpenTelemetry's gRPC conventions for
/// server spans); the others are the caller's doing and leave the span's
/// status unset.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// The tower layer; add with `Server::builder().layer(RpcMetricsLayer)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        methods();
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = Call {
            labels: methods().get(request.uri().path()).copied(),
            started: Instant::now(),
            span: tracing::Span::none(),
            code: None,
        };
        RpcFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

/// One call being measured; recorded when dropped.
struct Call {
    labels: Option<(&'static str, &'static str)>,
    started: Instant,
    span: tracing::Span,
    code: Option<Code>,
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped before any status went out: the client cancelled.
        let code = self.code.unwrap_or(Code::Cancelled);
        self.span.record("rpc.grpc.status_code", code as i64);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        if let Some((service, method)) = self.labels {
            let label = CODES.get(code as usize).copied().unwrap_or("2");
            metrics::histogram!(
                "rpc_server_duration_seconds",
                "rpc_service" => service,
                "rpc_method" => method,
                "rpc_grpc_status_code" => label,
            )
            .record(self.started.elapsed().as_secs_f64());
        }
    }
}

pin_project! {
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<RpcBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let mut call = this.call.take();
        if let Some(call) = call.as_mut() {
            // tonic's server enters the call's span around this poll.
            call.span = tracing::Span::current();
            call.code = status_in(response.headers());
        }
        Poll::Ready(Ok(response.map(|inner| RpcBody { inner, call })))
    }
}

pin_project! {
    /// The response body, unchanged; ends the measurement at the trailers.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let end = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(status_in),
            Some(Err(_)) => Some(Some(Code::Unknown)),
            None => Some(None),
        };
        if let Some(code) = end
            && let Some(mut call) = this.call.take()
        {
            call.code = code.or(call.code).or(Some(Code::Unknown));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_contracts_methods_only() {
        let methods = methods();
        assert_eq!(
            methods.get("/signal_audit.v1.SignalWriterService/RecordSignal"),
            Some(&("signal_audit.v1.SignalWriterService", "RecordSignal"))
        );
        assert!(methods.contains_key("/signal_audit.v1.SignalAnalyticsService/GetMetrics"));
        assert!(!methods.contains_key("/grpc.health.v1.Health/Check"));
        assert!(!methods.contains_key("/signal_audit.v1.SignalWriterService/Nope"));
    }

    #[test]
    fn reads_the_status_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(status_in(&headers), Some(Code::InvalidArgument));
    }
}
