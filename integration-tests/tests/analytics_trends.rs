//! GetTrends, GetCorrelations and DetectRegressions follow the series they
//! are given.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{DurationRound, TimeDelta, Utc};
use integration_tests::analytics::*;
use integration_tests::channel;

#[tokio::test(flavor = "multi_thread")]
async fn trends_and_correlations_follow_the_series() {
    let app = start_app().await;
    let start = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::minutes(30);
    let rising: Vec<usize> = (0..10).map(|i| i + 1).collect();
    let falling: Vec<usize> = (0..10).map(|i| 10 - i).collect();
    series(&app, "UPUP", start, &rising).await;
    series(&app, "SAME", start, &rising).await;
    series(&app, "DOWN", start, &falling).await;
    series(&app, "FLAT", start, &[3; 10]).await;
    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
    app.wait_replica().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);

    let trend = |ticker: &str| pb::GetTrendsRequest {
        time_range: range(start, 10),
        bucket_size: pb::BucketSize::Minute.into(),
        ticker: ticker.into(),
        metrics: vec![pb::Metric::Signals.into()],
    };
    let up = analytics
        .get_trends(trend("UPUP"))
        .await
        .unwrap()
        .into_inner()
        .trends
        .remove(0);
    assert_eq!(up.direction, pb::TrendDirection::Up as i32);
    assert!(
        (up.slope_per_hour - 60.0).abs() < 1e-6,
        "one more signal a minute is 60 an hour: {}",
        up.slope_per_hour
    );
    assert!((up.r2 - 1.0).abs() < 1e-9);
    assert_eq!(up.points, 10);
    let down = analytics
        .get_trends(trend("DOWN"))
        .await
        .unwrap()
        .into_inner()
        .trends
        .remove(0);
    assert_eq!(down.direction, pb::TrendDirection::Down as i32);
    let flat = analytics
        .get_trends(trend("FLAT"))
        .await
        .unwrap()
        .into_inner()
        .trends
        .remove(0);
    assert_eq!(flat.direction, pb::TrendDirection::Flat as i32);

    let matrix = analytics
        .get_correlations(pb::GetCorrelationsRequest {
            time_range: range(start, 10),
            bucket_size: pb::BucketSize::Minute.into(),
            tickers: vec!["UPUP".into(), "SAME".into(), "DOWN".into()],
            metric: pb::Metric::Signals.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let coefficient = |a: &str, b: &str| {
        matrix
            .pairs
            .iter()
            .find(|p| p.ticker_a == a && p.ticker_b == b)
            .map(|p| (p.coefficient, p.buckets))
            .unwrap()
    };
    assert_eq!(matrix.pairs.len(), 3);
    let (same, buckets) = coefficient("UPUP", "SAME");
    assert!((same - 1.0).abs() < 1e-9 && buckets == 10);
    assert!((coefficient("UPUP", "DOWN").0 + 1.0).abs() < 1e-9);
    let status = analytics
        .get_correlations(pb::GetCorrelationsRequest {
            time_range: range(start, 10),
            bucket_size: pb::BucketSize::Minute.into(),
            tickers: vec!["UPUP".into()],
            metric: 0,
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("tickers"));
}

#[tokio::test(flavor = "multi_thread")]
async fn regressions_are_found_with_their_figures_and_noise_is_not() {
    let app = start_app().await;
    let base = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::minutes(40);
    let recent = base + TimeDelta::minutes(20);
    let mut writer = app.writer.clone();
    for batch in [
        window_batch("SLOW", base, 40, 100, 0),
        window_batch("SLOW", recent, 40, 400, 0),
        window_batch("ERRS", base, 100, 100, 1),
        window_batch("ERRS", recent, 100, 100, 30),
        window_batch("CALM", base, 50, 200, 2),
        window_batch("CALM", recent, 50, 210, 3),
    ] {
        writer.record_batch(batch).await.unwrap();
    }
    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
    app.wait_replica().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let found = analytics
        .detect_regressions(pb::DetectRegressionsRequest {
            baseline: range(base, 10),
            recent: range(recent, 10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .regressions;
    let slow = found
        .iter()
        .find(|r| r.ticker == "SLOW" && r.kind == pb::RegressionKind::Latency as i32)
        .expect("SLOW got slower");
    assert!(
        (slow.baseline_value - 100.0).abs() < 1e-6 && (slow.recent_value - 400.0).abs() < 1e-6,
        "{slow:?}"
    );
    assert!((slow.change - 4.0).abs() < 1e-9);
    // Every SLOW latency is 100 ms, then 400 ms: the merged sketches' p95
    // must say so within the sketch's 2 %.
    assert!(
        (slow.baseline_p95_ms / 100.0 - 1.0).abs() <= 0.02
            && (slow.recent_p95_ms / 400.0 - 1.0).abs() <= 0.02,
        "{slow:?}"
    );
    assert_eq!((slow.baseline_samples, slow.recent_samples), (40, 40));
    let errs = found
        .iter()
        .find(|r| r.ticker == "ERRS" && r.kind == pb::RegressionKind::ErrorRate as i32)
        .expect("ERRS got more error-prone");
    // 200 events per window (received + completion): 1/200 then 30/200.
    assert!(
        (errs.baseline_value - 0.005).abs() < 1e-9 && (errs.recent_value - 0.15).abs() < 1e-9,
        "{errs:?}"
    );
    assert!(errs.z >= 3.0);
    assert!(
        found.iter().all(|r| r.ticker != "CALM"),
        "noise is not a regression: {found:?}"
    );

    let status = analytics
        .detect_regressions(pb::DetectRegressionsRequest {
            baseline: range(recent, 10),
            recent: range(base, 10),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("baseline"));
}
