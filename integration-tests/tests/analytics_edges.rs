//! Edges of the analytics RPCs: CheckDataQuality's summary check under live
//! conditions (ranges that cut through minutes, buckets still waiting for
//! the refresher, a tampered error rollup), DetectRegressions' window limits,
//! and the as_of of answers read from raw events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use audit_wire::convert::to_timestamp;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel_async::SimpleAsyncConnection;
use integration_tests::{TestApp, channel, new_event, new_signal};
use pb::{SignalLocation as L, SignalStatus as S};

async fn start_app() -> TestApp {
    TestApp::start_with(|writer, _| {
        // Refreshes happen when the test says so.
        writer.rollup_refresh_ms = 3_600_000;
    })
    .await
}

async fn refresh(app: &TestApp) {
    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
}

/// A signal received at `at`, failing with an HTTP 502 two seconds later.
fn failing_signal(batch: &mut pb::RecordBatchRequest, ticker: &str, at: DateTime<Utc>) {
    let id = uuid::Uuid::new_v4().to_string();
    let mut signal = new_signal(ticker);
    signal.signal_id = id.clone();
    signal.received_at = Some(to_timestamp(at));
    batch.signals.push(signal);
    let mut failed = new_event(
        &id,
        S::ForwardedHttpError,
        L::Completed,
        Some(at + TimeDelta::seconds(2)),
    );
    failed.http_status = 502;
    batch.events.push(failed);
}

async fn summary_finding(
    analytics: &mut SignalAnalyticsServiceClient<tonic::transport::Channel>,
    summary_range: Option<pb::TimeRange>,
) -> pb::Finding {
    analytics
        .check_data_quality(pb::CheckDataQualityRequest {
            summary_range,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .findings
        .into_iter()
        .find(|f| f.kind == pb::FindingKind::SummaryMismatch as i32)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_summary_check_has_no_false_positives() {
    let app = start_app().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let minute = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::hours(2);
    let mut batch = pb::RecordBatchRequest::default();
    // Events in the first and last seconds of two minutes, so a range that
    // starts or ends inside those minutes sees only part of them.
    for (ticker, at) in [
        ("AAPL", minute + TimeDelta::seconds(1)),
        ("AAPL", minute + TimeDelta::seconds(50)),
        ("MSFT", minute + TimeDelta::seconds(40)),
        (
            "AAPL",
            minute + TimeDelta::minutes(30) + TimeDelta::seconds(5),
        ),
        (
            "MSFT",
            minute + TimeDelta::minutes(30) + TimeDelta::seconds(55),
        ),
    ] {
        failing_signal(&mut batch, ticker, at);
    }
    app.writer.clone().record_batch(batch).await.unwrap();
    refresh(&app).await;
    app.wait_replica().await;
    let unaligned = Some(pb::TimeRange {
        start: Some(to_timestamp(minute + TimeDelta::seconds(30))),
        end: Some(to_timestamp(
            minute + TimeDelta::minutes(30) + TimeDelta::seconds(30),
        )),
    });
    let finding = summary_finding(&mut analytics, unaligned).await;
    assert_eq!(finding.count, 0, "partial minutes: {:?}", finding.ids);
    // The default range (the last day up to now) is not aligned either.
    let finding = summary_finding(&mut analytics, None).await;
    assert_eq!(finding.count, 0, "default range: {:?}", finding.ids);

    // New events whose buckets the refresher has not reached yet are not
    // a mismatch: the rollups are behind, not wrong.
    let mut batch = pb::RecordBatchRequest::default();
    failing_signal(&mut batch, "AAPL", minute + TimeDelta::seconds(20));
    failing_signal(&mut batch, "BTC-USD", minute + TimeDelta::minutes(10));
    app.writer.clone().record_batch(batch).await.unwrap();
    app.wait_replica().await;
    let finding = summary_finding(&mut analytics, unaligned).await;
    assert_eq!(finding.count, 0, "pending refresh: {:?}", finding.ids);
    refresh(&app).await;
    app.wait_replica().await;
    let finding = summary_finding(&mut analytics, unaligned).await;
    assert_eq!(finding.count, 0, "after refresh: {:?}", finding.ids);

    // A rollup that is wrong with nothing pending is still reported, the
    // error rollup included.
    app.primary()
        .await
        .batch_execute(
            "UPDATE signal_error_summary SET events = events + 1 \
             WHERE period_type = 'minute' AND normalised_ticker = 'BTCUSD'",
        )
        .await
        .unwrap();
    app.wait_replica().await;
    let finding = summary_finding(&mut analytics, unaligned).await;
    let expected = format!(
        "minute BTCUSD {}",
        (minute + TimeDelta::minutes(10)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    // Error rollups exist per ticker only, so only the ticker's bucket is named.
    assert_eq!(finding.ids, [expected]);
    assert_eq!(finding.count, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_windows_switch_to_hours_and_are_bounded() {
    let app = start_app().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let now = Utc::now();
    let windows = |span: TimeDelta| pb::DetectRegressionsRequest {
        baseline: Some(pb::TimeRange {
            start: Some(to_timestamp(now - span)),
            end: Some(to_timestamp(now - TimeDelta::hours(1))),
        }),
        recent: Some(pb::TimeRange {
            start: Some(to_timestamp(now - TimeDelta::hours(1))),
            end: Some(to_timestamp(now)),
        }),
        ..Default::default()
    };
    // A week is more than 10,000 minutes: answered from hour rollups.
    for span in [
        TimeDelta::minutes(10_000),
        TimeDelta::days(7),
        TimeDelta::days(400),
    ] {
        analytics
            .detect_regressions(windows(span))
            .await
            .unwrap_or_else(|status| panic!("{span}: {status:?}"));
    }
    let status = analytics
        .detect_regressions(windows(TimeDelta::hours(10_001)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("baseline"), "{status:?}");
    let mut overlapping = windows(TimeDelta::days(1));
    if let Some(recent) = overlapping.recent.as_mut() {
        recent.start = Some(to_timestamp(now - TimeDelta::hours(2)));
    }
    let status = analytics.detect_regressions(overlapping).await.unwrap_err();
    assert!(status.message().contains("baseline"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_event_answers_are_as_of_the_replica() {
    let app = start_app().await;
    let (signal, _) = app.record_signal("AAPL").await;
    app.wait_replica().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let created = audit_wire::convert::timestamp("t", signal.created_at.as_ref().unwrap()).unwrap();
    let before = Utc::now();
    let answer = analytics
        .get_stage_latencies(pb::GetStageLatenciesRequest {
            time_range: Some(pb::TimeRange {
                start: Some(to_timestamp(created - TimeDelta::minutes(1))),
                end: Some(to_timestamp(created + TimeDelta::minutes(1))),
            }),
            // From raw events (without it: the hourly view, as of its refresh).
            exact: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let as_of = audit_wire::convert::timestamp("as_of", answer.as_of.as_ref().unwrap()).unwrap();
    // A caught-up replica answers as of the call (its transaction start);
    // PostgreSQL's clock is this machine's.
    assert!(
        as_of >= before - TimeDelta::seconds(1) && as_of <= Utc::now(),
        "{before} <= {as_of}"
    );
}

#[derive(diesel::QueryableByName)]
struct RawWindow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    terminal: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    events: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    errors: i64,
}

/// Windows over several hours are read as day/hour/minute tiles; their
/// figures must still be those of every minute bucket starting inside each
/// window, recounted here from raw events.
#[tokio::test(flavor = "multi_thread")]
async fn regression_figures_over_hours_match_raw_events() {
    use diesel::sql_types::Timestamptz;
    use diesel_async::RunQueryDsl;

    let app = start_app().await;
    let now = Utc::now();
    let mut batch = pb::RecordBatchRequest::default();
    // A failing signal every 7 minutes over the last 5 hours.
    for i in 0..43 {
        failing_signal(
            &mut batch,
            "NVDA",
            now - TimeDelta::minutes(300) + TimeDelta::minutes(7 * i),
        );
    }
    app.writer.clone().record_batch(batch).await.unwrap();
    refresh(&app).await;
    app.wait_replica().await;

    // Edges inside minutes and hours, so every kind of tile is needed.
    let baseline = (
        now - TimeDelta::minutes(290) - TimeDelta::seconds(17),
        now - TimeDelta::minutes(50) + TimeDelta::seconds(13),
    );
    let recent = (baseline.1, now + TimeDelta::minutes(1));
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let found = analytics
        .detect_regressions(pb::DetectRegressionsRequest {
            baseline: Some(pb::TimeRange {
                start: Some(to_timestamp(baseline.0)),
                end: Some(to_timestamp(baseline.1)),
            }),
            recent: Some(pb::TimeRange {
                start: Some(to_timestamp(recent.0)),
                end: Some(to_timestamp(recent.1)),
            }),
            min_samples: 1,
            // Report every ticker's latency, so its figures can be checked.
            latency_ratio: 1e-9,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .regressions;
    let latency = found
        .iter()
        .find(|r| r.ticker == "NVDA" && r.kind == pb::RegressionKind::Latency as i32)
        .unwrap_or_else(|| panic!("no NVDA latency figures: {found:?}"));

    let mut db = app.replica().await;
    let raw = |window: (DateTime<Utc>, DateTime<Utc>)| {
        // Minute buckets whose start lies in the window.
        diesel::sql_query(
            "SELECT count(*) FILTER (WHERE e.event_type = 'forwarded_http_error') AS terminal, \
                    count(*) AS events, \
                    count(*) FILTER (WHERE e.http_status >= 400) AS errors \
             FROM signal_events e JOIN signals s USING (signal_id) \
             WHERE s.normalised_ticker = 'NVDA' \
               AND date_trunc('minute', e.ts) >= $1 AND date_trunc('minute', e.ts) < $2",
        )
        .bind::<Timestamptz, _>(window.0)
        .bind::<Timestamptz, _>(window.1)
    };
    let base: RawWindow = raw(baseline).get_result(&mut db).await.unwrap();
    let now_raw: RawWindow = raw(recent).get_result(&mut db).await.unwrap();
    assert!(base.terminal > 20, "the baseline spans hours of data");
    assert_eq!(
        (latency.baseline_samples, latency.recent_samples),
        (base.terminal, now_raw.terminal)
    );
    // Every failure took 2 s: the average and the sketch's p95 say so.
    assert!(
        (latency.baseline_value - 2000.0).abs() < 1e-6,
        "{latency:?}"
    );
    assert!((latency.baseline_p95_ms / 2000.0 - 1.0).abs() <= 0.02);
    assert!(base.errors == base.terminal && base.events == 2 * base.terminal);
}
