//! The `/metrics` endpoints, scraped over HTTP like Prometheus does, after
//! real calls: exact call counts by method and status code, pool sizes from
//! the configuration, the writer's jobs and data-quality series, the
//! reader's replica and cache series, build info.
//!
//! A test binary of its own with one test: the metrics recorder is
//! process-wide (both in-process services render the same registry), so
//! no other test may make calls while the counts are compared.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use audit_server::metrics::MetricsListen;
use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use integration_tests::{TestApp, channel, free_port, new_signal};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape: every sample line.
struct Scrape(Vec<Sample>);

impl Scrape {
    async fn get(addr: SocketAddr) -> Self {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        Self(body.lines().filter_map(parse_line).collect())
    }

    /// The value of the one series of `name` that has all `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {} series",
            matching.len()
        );
        matching.first().copied()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest
                .trim_end_matches('}')
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            (name, labels)
        }
        None => (series, Vec::new()),
    };
    Some((name.to_owned(), labels, value))
}

const WRITER: &str = "signal_audit.v1.SignalWriterService";
const ANALYTICS: &str = "signal_audit.v1.SignalAnalyticsService";
const CALLS: &str = "rpc_server_duration_seconds_count";

fn calls(scrape: &Scrape, service: &str, method: &str, code: &str) -> f64 {
    scrape
        .value(
            CALLS,
            &[
                ("rpc_service", service),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
        .unwrap_or(0.0)
}

/// Scrapes `addr` until `ready` holds (the periodic jobs and checks run in
/// the background), at most 20 s.
async fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = Scrape::get(addr).await;
        if ready(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 20 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metrics_request() -> pb::GetMetricsRequest {
    let now = Utc::now();
    pb::GetMetricsRequest {
        time_range: Some(pb::TimeRange {
            start: Some(audit_wire::convert::to_timestamp(now - TimeDelta::hours(1))),
            end: Some(audit_wire::convert::to_timestamp(now)),
        }),
        bucket_size: pb::BucketSize::Minute.into(),
        ticker: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_services_export_their_metrics() {
    let writer_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let reader_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let app = TestApp::start_with(|writer, reader| {
        writer.metrics_listen = MetricsListen(Some(writer_metrics));
        reader.metrics_listen = MetricsListen(Some(reader_metrics));
    })
    .await;

    // Build info and pool sizes from the configuration (harness: writer
    // pool 24, reader pool 8).
    let before = Scrape::get(writer_metrics).await;
    assert_eq!(
        before.value(
            "audit_build_info",
            &[
                ("service_name", "audit-writer"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        before.value("db_client_connection_max", &[("pool_name", "primary")]),
        Some(24.0)
    );
    assert_eq!(
        before.value("audit_writer_group_commit_queue_capacity", &[]),
        Some(20_000.0)
    );
    assert_eq!(
        before.value("audit_writer_ingest_streams_max", &[]),
        Some(8.0)
    );
    let group_items = before
        .value("audit_writer_group_commit_size_sum", &[])
        .unwrap_or(0.0);

    // Three good calls and one INVALID_ARGUMENT.
    for ticker in ["AAPL", "MSFT", "TSLA"] {
        app.record_signal(ticker).await;
    }
    let refused = app
        .writer
        .clone()
        .record_signal(pb::RecordSignalRequest { signal: None })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // A stream is counted when it ends.
    let acks: Vec<_> = app
        .writer
        .clone()
        .ingest(tokio_stream::iter([pb::IngestRequest {
            chunk_id: 1,
            signals: vec![new_signal("NVDA")],
            events: Vec::new(),
        }]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(acks.len(), 1);

    let after = scrape_until(writer_metrics, "the Ingest stream counted", |s| {
        calls(s, WRITER, "Ingest", "0") > calls(&before, WRITER, "Ingest", "0")
    })
    .await;
    assert_eq!(
        calls(&after, WRITER, "RecordSignal", "0") - calls(&before, WRITER, "RecordSignal", "0"),
        3.0
    );
    assert_eq!(
        calls(&after, WRITER, "RecordSignal", "3") - calls(&before, WRITER, "RecordSignal", "3"),
        1.0
    );
    assert_eq!(
        calls(&after, WRITER, "Ingest", "0") - calls(&before, WRITER, "Ingest", "0"),
        1.0
    );
    // Histogram buckets, not a summary.
    assert!(after.has("rpc_server_duration_seconds_bucket"));
    // Health and reflection are not counted.
    assert!(
        !after
            .0
            .iter()
            .any(|(_, labels, _)| labels.iter().any(|(_, v)| v.contains("grpc.health")))
    );
    // Each good RecordSignal was one item of some group.
    assert_eq!(
        after
            .value("audit_writer_group_commit_size_sum", &[])
            .unwrap()
            - group_items,
        3.0
    );
    assert!(
        after
            .value(
                "db_client_connection_wait_time_seconds_count",
                &[("pool_name", "primary")]
            )
            .unwrap()
            > 0.0
    );
    assert_eq!(
        after.value("audit_writer_refusals_total", &[("reason", "queue_full")]),
        Some(0.0)
    );
    assert_eq!(
        after.value("audit_writer_refusals_total", &[("reason", "ingest_slots")]),
        Some(0.0)
    );

    // Every job's series exists; the jobs run at start-up, so each succeeds
    // soon, and the data-quality check reports a clean database.
    let jobs = [
        "rollup_refresh",
        "analytics_refresh",
        "partition_maintenance",
        "data_quality",
    ];
    for job in jobs {
        assert!(
            after
                .value(
                    "audit_job_runs_total",
                    &[("job_name", job), ("outcome", "error")]
                )
                .is_some(),
            "{job} has an error series from start-up"
        );
    }
    // The counter is incremented before the gauge is set, but one scrape
    // can render the counters before a run ends and the gauges after it:
    // wait for both.
    let settled = scrape_until(writer_metrics, "every job succeeded once", |s| {
        jobs.iter().all(|job| {
            s.value(
                "audit_job_last_success_timestamp_seconds",
                &[("job_name", job)],
            )
            .is_some()
                && s.value(
                    "audit_job_runs_total",
                    &[("job_name", job), ("outcome", "ok")],
                )
                .is_some_and(|n| n >= 1.0)
        }) && s.has("audit_partitions_premade_days")
    })
    .await;
    for job in jobs {
        assert!(
            settled
                .value(
                    "audit_job_runs_total",
                    &[("job_name", job), ("outcome", "ok")]
                )
                .unwrap()
                >= 1.0
        );
        assert!(
            settled
                .value("audit_job_duration_seconds_count", &[("job_name", job)])
                .unwrap()
                >= 1.0
        );
    }
    for kind in [
        "orphan_events",
        "stuck_signals",
        "counter_mismatch",
        "summary_mismatch",
    ] {
        assert_eq!(
            settled.value("audit_data_quality_findings", &[("kind", kind)]),
            Some(0.0),
            "{kind}"
        );
    }
    assert_eq!(settled.value("audit_stuck_signals", &[]), Some(0.0));
    // The migration premakes a week of daily partitions.
    assert!(settled.value("audit_partitions_premade_days", &[]).unwrap() >= 6.0);
    let age = settled
        .value("audit_analytics_age_seconds", &[])
        .expect("no analytics age");
    assert!(age >= 0.0, "{age}");
    assert!(settled.value("audit_rollup_backlog_seconds", &[]).unwrap() >= 0.0);
    assert!(settled.has("db_client_connection_pending_requests"));
    assert!(settled.has("db_client_connection_timeouts_total"));

    // The reader: analytics calls (the second may come from the cache),
    // replica gauges from its health check, its pool.
    let reader_before = Scrape::get(reader_metrics).await;
    assert_eq!(
        reader_before.value("audit_build_info", &[("service_name", "audit-reader")]),
        Some(1.0)
    );
    assert_eq!(
        reader_before.value("db_client_connection_max", &[("pool_name", "replica")]),
        Some(8.0)
    );
    let lookups = |s: &Scrape| {
        ["hit", "miss"]
            .iter()
            .map(|r| {
                s.value(
                    "audit_reader_cache_requests_total",
                    &[("tier", "memory"), ("result", r)],
                )
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let request = metrics_request();
    analytics.get_metrics(request.clone()).await.unwrap();
    analytics.get_metrics(request).await.unwrap();
    let bad = analytics
        .get_metrics(pb::GetMetricsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let reader_after = scrape_until(reader_metrics, "the replica is up", |s| {
        s.value("audit_reader_replica_up", &[("replica", "replica")]) == Some(1.0)
    })
    .await;
    assert_eq!(
        calls(&reader_after, ANALYTICS, "GetMetrics", "0")
            - calls(&reader_before, ANALYTICS, "GetMetrics", "0"),
        2.0
    );
    assert_eq!(
        calls(&reader_after, ANALYTICS, "GetMetrics", "3")
            - calls(&reader_before, ANALYTICS, "GetMetrics", "3"),
        1.0
    );
    assert_eq!(lookups(&reader_after) - lookups(&reader_before), 2.0);
    assert!(
        reader_after
            .value(
                "audit_reader_replica_lag_seconds",
                &[("replica", "replica")]
            )
            .unwrap()
            >= 0.0
    );
}
