//! Every bad analytics argument is INVALID_ARGUMENT naming its field.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{TimeDelta, Utc};
use integration_tests::analytics::*;
use integration_tests::channel;

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_invalid_naming_the_field() {
    let app = start_app().await;
    app.record_signal("AAPL").await;
    app.wait_replica().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let now = Utc::now();
    let inverted = Some(pb::TimeRange {
        start: Some(audit_wire::convert::to_timestamp(now)),
        end: Some(audit_wire::convert::to_timestamp(now - TimeDelta::hours(1))),
    });
    let cases = vec![
        (
            "time_range",
            pb::GetMetricsRequest {
                time_range: inverted,
                bucket_size: 1,
                ticker: String::new(),
            },
        ),
        (
            "time_range",
            pb::GetMetricsRequest {
                time_range: None,
                bucket_size: 1,
                ticker: String::new(),
            },
        ),
        (
            "bucket_size",
            pb::GetMetricsRequest {
                time_range: range(now, 60),
                bucket_size: 0,
                ticker: String::new(),
            },
        ),
        (
            "ticker",
            pb::GetMetricsRequest {
                time_range: range(now, 60),
                bucket_size: 1,
                ticker: "NOPE".into(),
            },
        ),
        // 60 days of minute buckets.
        (
            "time_range",
            pb::GetMetricsRequest {
                time_range: range(now, 60 * 24 * 60),
                bucket_size: 1,
                ticker: String::new(),
            },
        ),
    ];
    for (field, request) in cases {
        let status = analytics.get_metrics(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{field} in {}",
            status.message()
        );
    }
    let stage_cases = [
        ("time_range", None, 0, "", false),
        ("time_range", inverted, 0, "", false),
        // More than 10,000 hours of the hourly view.
        ("time_range", range(now, 60 * 24 * 500), 0, "", false),
        ("group_by", range(now, 60), 99, "", false),
        ("ticker", range(now, 60), 0, "NOPE", false),
        // Raw events: at most 6 hours.
        ("exact", range(now, 60 * 7), 0, "", true),
    ];
    for (field, time_range, group_by, ticker, exact) in stage_cases {
        let status = analytics
            .get_stage_latencies(pb::GetStageLatenciesRequest {
                time_range,
                ticker: ticker.into(),
                group_by,
                exact,
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{field} in {}",
            status.message()
        );
    }
    let status = analytics
        .get_time_series(pb::GetTimeSeriesRequest {
            time_range: range(now, 60),
            bucket_size: 1,
            metric: pb::Metric::Signals.into(),
            moving_average_window: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("moving_average_window"));
    let status = analytics
        .get_time_series(pb::GetTimeSeriesRequest {
            time_range: range(now, 60),
            bucket_size: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("metric"));
}
