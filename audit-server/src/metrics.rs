//! Prometheus metrics (names, labels and buckets: docs/metrics.md).
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
//! registry there). OTLP metrics: the `metrics` crate has no maintained OTLP
//! exporter, so a collector obtains them by scraping this endpoint (the
//! OpenTelemetry Collector's `prometheus` receiver); spans go over OTLP
//! directly (see [`crate::telemetry`]).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder on first call and returns its handle.
/// Instruments registered before this record nothing, so services call it
/// before building anything that registers instruments.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [
            ("rpc_server_duration_seconds", RPC_BUCKETS),
            ("db_client_connection_wait_time_seconds", POOL_WAIT_BUCKETS),
            ("audit_writer_group_commit_size", GROUP_BUCKETS),
            ("audit_job_duration_seconds", JOB_BUCKETS),
        ];
        // Only an empty bucket list is refused, and these are constants.
        let builder = buckets
            .into_iter()
            .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
                builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            })
            .unwrap_or_else(|error| {
                tracing::error!(%error, "histogram buckets refused, exporting summaries");
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "a metrics recorder was already installed; /metrics shows only what reaches this one");
        }
        describe();
        handle
    })
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
