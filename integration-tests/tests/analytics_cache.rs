//! Answers are cached by rollup version, in process and in a shared Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{DateTime, Utc};
use integration_tests::analytics::*;
use integration_tests::{TestApp, channel};

/// Adds 100 signals to every summary row behind the services' backs, then
/// optionally bumps the rollup version, and waits for the replica.
async fn tamper(app: &TestApp, bump_version: bool) {
    use diesel_async::SimpleAsyncConnection;
    let mut primary = app.primary().await;
    let mut sql =
        "UPDATE signal_metrics_summary SET total_signals = total_signals + 100;".to_owned();
    if bump_version {
        sql.push_str("UPDATE rollup_state SET refreshed_at = clock_timestamp();");
    }
    primary.batch_execute(&sql).await.unwrap();
    app.wait_replica().await;
}

async fn signals_now(
    analytics: &mut SignalAnalyticsServiceClient<tonic::transport::Channel>,
    start: DateTime<Utc>,
) -> i64 {
    analytics
        .get_metrics(pb::GetMetricsRequest {
            time_range: range(start, 120),
            bucket_size: pb::BucketSize::Hour.into(),
            ticker: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .total
        .unwrap()
        .signals
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached_until_new_rollups_reach_the_replica() {
    let app = start_app().await;
    let start = history(&app).await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let first = signals_now(&mut analytics, start).await;
    assert_eq!(first, 240);
    tamper(&app, false).await;
    assert_eq!(
        signals_now(&mut analytics, start).await,
        first,
        "served from the cache"
    );
    tamper(&app, true).await;
    assert!(
        signals_now(&mut analytics, start).await > first,
        "a new rollup version invalidates it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_redis_cache_serves_other_readers() {
    let redis_url = "redis://127.0.0.1:6379/0";
    let app = TestApp::start_with(|writer, reader| {
        writer.max_batch_items = 5_000;
        writer.rollup_refresh_ms = 3_600_000;
        reader.redis_url = Some(redis_url.into());
    })
    .await;
    let start = history(&app).await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let first = signals_now(&mut analytics, start).await;

    // The answer is in Redis, under the current rollup version.
    let client = redis::Client::open(redis_url).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("signal-audit:GetMetrics:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty());

    // A second reader with an empty in-process cache answers from Redis:
    // the tampered rows are not seen until the version changes.
    tamper(&app, false).await;
    let mut args = integration_tests::reader_args(app.replica_url.clone());
    args.redis_url = Some(redis_url.into());
    let other = integration_tests::spawn_reader(args).await;
    let mut other_client = SignalAnalyticsServiceClient::new(channel(other.addr).await);
    assert_eq!(signals_now(&mut other_client, start).await, first);
    tamper(&app, true).await;
    assert!(signals_now(&mut other_client, start).await > first);
}
