//! Rollups stay exact against raw events (late ones included), merged
//! percentiles stay within 2% of percentile_cont, and GetMetrics,
//! GetTimeSeries and GetErrorBreakdown match independent computations.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use integration_tests::analytics::*;
use integration_tests::{TestApp, channel};
use pb::SignalStatus as S;

#[derive(QueryableByName, Debug)]
#[expect(dead_code, reason = "read through Debug in the failure message")]
struct Mismatch {
    #[diesel(sql_type = Text)]
    period_type: String,
    #[diesel(sql_type = Text)]
    normalised_ticker: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bucket_matches_raw_events_including_late_ones() {
    let app = start_app().await;
    history(&app).await;
    let mut db = app.replica().await;
    // Independent of the refresher: recount every bucket at every level from
    // raw events and list the buckets that disagree in any count, plus
    // buckets missing on either side.
    let mismatches: Vec<Mismatch> = diesel::sql_query(
        "WITH raw AS ( \
            SELECT p.period::text AS period_type, t.ticker AS normalised_ticker, \
                   date_trunc(p.period, e.ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start, \
                   count(*) AS total_events, \
                   sum((e.event_type = 'received')::int) AS total_signals, \
                   sum((e.event_type = 'processing')::int) AS processing, \
                   sum((e.event_type = 'forwarding')::int) AS forwarding, \
                   sum((e.event_type = 'forwarded_success')::int) AS forwarded_success, \
                   sum((e.event_type = 'forwarded_http_error')::int) AS forwarded_http_error, \
                   sum((e.event_type = 'forwarded_timeout')::int) AS forwarded_timeout, \
                   sum((e.event_type = 'rejected')::int) AS rejected_signals, \
                   sum((e.event_type = 'error')::int) AS error_status, \
                   sum((e.error_info IS NOT NULL OR coalesce(e.http_status, 0) >= 400)::int) AS error_events, \
                   sum(CASE WHEN e.event_type::text IN ('rejected','forwarded_success','forwarded_timeout', \
                        'forwarded_http_error','forwarded_generic_error','discarded','error') \
                       THEN greatest(0, (extract(epoch FROM e.ts - s.created_at) * 1000000)::bigint) END) AS latency_sum \
            FROM signal_events e JOIN signals s USING (signal_id) \
            CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS p(period) \
            CROSS JOIN LATERAL (VALUES (s.normalised_ticker), ('*')) AS t(ticker) \
            GROUP BY 1, 2, 3) \
         SELECT coalesce(r.period_type, m.period_type::text) AS period_type, \
                coalesce(r.normalised_ticker, m.normalised_ticker) AS normalised_ticker, \
                coalesce(r.period_start, m.period_start) AS period_start \
         FROM raw r FULL JOIN signal_metrics_summary m \
           ON m.period_type::text = r.period_type AND m.normalised_ticker = r.normalised_ticker \
          AND m.period_start = r.period_start \
         WHERE m.metric_id IS NULL OR r.period_type IS NULL \
            OR (r.total_events, r.total_signals, r.processing, r.forwarding, r.forwarded_success, \
                r.forwarded_http_error, r.forwarded_timeout, r.rejected_signals, r.error_status, \
                r.error_events, coalesce(r.latency_sum, 0)) \
           IS DISTINCT FROM (m.total_events, m.total_signals, m.processing, m.forwarding, \
                m.forwarded_success, m.forwarded_http_error, m.forwarded_timeout, m.rejected_signals, \
                m.error_status, m.error_events, m.processing_time_sum_us)",
    )
    .load(&mut db)
    .await
    .unwrap();
    assert!(
        mismatches.is_empty(),
        "buckets that disagree with raw events: {mismatches:?}"
    );

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let Count { n } = diesel::sql_query("SELECT count(*) AS n FROM signal_metrics_summary")
        .get_result(&mut db)
        .await
        .unwrap();
    assert!(
        n > 100,
        "minute, hour and day buckets per ticker and overall: {n}"
    );
}

#[derive(QueryableByName)]
struct Quantiles {
    #[diesel(sql_type = Double)]
    exact: f64,
    #[diesel(sql_type = Double)]
    sketch: f64,
}

/// The exact `$1`-quantile (percentile_cont) of processing times, in
/// microseconds, over the terminal events of ticker `$2` ('*' for all).
const EXACT_LATENCY_QUANTILE: &str = "(SELECT percentile_cont($1) WITHIN GROUP (ORDER BY \
        greatest(0, extract(epoch FROM e.ts - s.created_at) * 1000000)) \
    FROM signal_events e JOIN signals s USING (signal_id) \
    WHERE e.event_type::text IN ('rejected','forwarded_success','forwarded_timeout', \
         'forwarded_http_error','forwarded_generic_error','discarded','error') \
      AND ($2 = '*' OR s.normalised_ticker = $2))::float8";

#[tokio::test(flavor = "multi_thread")]
async fn merged_percentiles_are_within_two_percent_of_percentile_cont() {
    let app = start_app().await;
    history(&app).await;
    let mut db = app.replica().await;
    for ticker in ["*", "AAPL", "BTCUSD"] {
        for q in [0.5, 0.9, 0.95, 0.99] {
            // Merge every minute bucket (the sketch path) and compare with
            // the exact continuous percentile of the raw latencies.
            let row: Quantiles = diesel::sql_query(
                format!(
                "SELECT {EXACT_LATENCY_QUANTILE} AS exact, \
                        (SELECT histogram_quantile(histogram_merge(latency_histogram), $1) \
                         FROM signal_metrics_summary WHERE period_type = 'minute' AND normalised_ticker = $2) AS sketch"
            ),
            )
            .bind::<Double, _>(q)
            .bind::<Text, _>(ticker)
            .get_result(&mut db)
            .await
            .unwrap();
            let error = (row.sketch - row.exact).abs() / row.exact;
            assert!(
                error <= 0.02,
                "{ticker} p{q}: sketch {} vs exact {} ({:.2}%)",
                row.sketch,
                row.exact,
                100.0 * error
            );
        }
    }

    // The same through GetMetrics, which merges the hourly sketches in the
    // reader: its total percentiles must match percentile_cont too.
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let now = Utc::now();
    for ticker in ["*", "AAPL", "BTCUSD"] {
        let total = analytics
            .get_metrics(pb::GetMetricsRequest {
                time_range: Some(pb::TimeRange {
                    start: Some(audit_wire::convert::to_timestamp(now - TimeDelta::days(2))),
                    end: Some(audit_wire::convert::to_timestamp(now + TimeDelta::hours(1))),
                }),
                bucket_size: pb::BucketSize::Hour.into(),
                ticker: if ticker == "*" {
                    String::new()
                } else {
                    ticker.into()
                },
            })
            .await
            .unwrap()
            .into_inner()
            .total
            .unwrap();
        for (q, got) in [
            (0.5, total.p50_processing_time),
            (0.95, total.p95_processing_time),
            (0.99, total.p99_processing_time),
        ] {
            let row: Quantiles = diesel::sql_query(format!(
                "SELECT {EXACT_LATENCY_QUANTILE} AS exact, 0::float8 AS sketch"
            ))
            .bind::<Double, _>(q)
            .bind::<Text, _>(ticker)
            .get_result(&mut db)
            .await
            .unwrap();
            let got = got.unwrap();
            let got_us = got.seconds as f64 * 1e6 + f64::from(got.nanos) / 1e3;
            let error = (got_us - row.exact).abs() / row.exact;
            assert!(
                error <= 0.02,
                "GetMetrics {ticker} p{q}: {got_us} us vs exact {} us ({:.2}%)",
                row.exact,
                100.0 * error
            );
        }
    }
}

#[derive(QueryableByName)]
struct RawTotals {
    #[diesel(sql_type = BigInt)]
    signals: i64,
    #[diesel(sql_type = BigInt)]
    events: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    success: i64,
    #[diesel(sql_type = BigInt)]
    terminal: i64,
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_time_series_and_errors_match_raw_data() {
    let app = start_app().await;
    let start = history(&app).await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let mut db = app.replica().await;

    let raw: RawTotals = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE e.event_type = 'received') AS signals, count(*) AS events, \
                count(*) FILTER (WHERE e.error_info IS NOT NULL OR e.http_status >= 400) AS errors, \
                count(*) FILTER (WHERE e.event_type = 'forwarded_success') AS success, \
                count(*) FILTER (WHERE e.event_type::text IN ('rejected','forwarded_success','forwarded_timeout', \
                     'forwarded_http_error','forwarded_generic_error','discarded','error')) AS terminal \
         FROM signal_events e JOIN signals s USING (signal_id) \
         WHERE s.normalised_ticker = 'AAPL' AND e.ts >= $1 AND e.ts < $2",
    )
    .bind::<Timestamptz, _>(start)
    .bind::<Timestamptz, _>(start + TimeDelta::minutes(120))
    .get_result(&mut db)
    .await
    .unwrap();

    let metrics = analytics
        .get_metrics(pb::GetMetricsRequest {
            time_range: range(start, 120),
            bucket_size: pb::BucketSize::Minute.into(),
            ticker: "nasdaq:aapl".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let total = metrics.total.unwrap();
    assert_eq!(total.signals, raw.signals);
    assert_eq!(total.events, raw.events);
    assert_eq!(total.error_events, raw.errors);
    assert_eq!(total.terminal_events, raw.terminal);
    assert!((total.success_rate - raw.success as f64 / raw.terminal as f64).abs() < 1e-9);
    assert_eq!(
        metrics.buckets.iter().map(|b| b.signals).sum::<i64>(),
        raw.signals
    );
    let received = total
        .events_by_status
        .iter()
        .find(|c| c.status == S::Received as i32)
        .unwrap();
    assert_eq!(received.count, raw.signals);
    assert!(metrics.as_of.is_some());
    let hourly = analytics
        .get_metrics(pb::GetMetricsRequest {
            time_range: range(start, 120),
            bucket_size: pb::BucketSize::Hour.into(),
            ticker: "AAPL".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .total
        .unwrap();
    assert_eq!(
        (hourly.signals, hourly.events, hourly.error_events),
        (raw.signals, raw.events, raw.errors)
    );

    let series = analytics
        .get_time_series(pb::GetTimeSeriesRequest {
            time_range: range(start, 120),
            bucket_size: pb::BucketSize::Minute.into(),
            ticker: String::new(),
            metric: pb::Metric::Signals.into(),
            moving_average_window: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        series.points.len(),
        120,
        "one point per minute, gaps included"
    );
    assert!(
        series.points.iter().any(|p| !p.has_data && p.value == 0.0),
        "gaps are filled"
    );
    assert_eq!(series.points.iter().map(|p| p.value).sum::<f64>(), 240.0);
    for i in 2..series.points.len() {
        let expected =
            (series.points[i - 2].value + series.points[i - 1].value + series.points[i].value)
                / 3.0;
        assert!((series.points[i].moving_average - expected).abs() < 1e-9);
    }

    let errors = analytics
        .get_error_breakdown(pb::GetErrorBreakdownRequest {
            time_range: range(start, 120),
            ticker: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let N { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM signal_events WHERE (error_info IS NOT NULL OR http_status >= 400) AND ts >= $1",
    )
    .bind::<Timestamptz, _>(start)
    .get_result(&mut db)
    .await
    .unwrap();
    assert_eq!(errors.total, n);
    for dimension in [
        &errors.by_type,
        &errors.by_http_status,
        &errors.by_ticker,
        &errors.by_stage,
    ] {
        assert_eq!(dimension.iter().map(|c| c.count).sum::<i64>(), n);
    }
    assert!(errors.by_type.iter().any(|c| c.key == "validation"));
    assert!(errors.by_type.iter().any(|c| c.key == "timeout"));
    assert!(errors.by_http_status.iter().any(|c| c.key == "502"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_refreshes_rollups_by_itself() {
    let app = TestApp::start_with(|writer, _| writer.rollup_refresh_ms = 50).await;
    let (signal, _) = app.record_signal("SPY").await;
    // The ticker check reads `signals` on the replica: let it see the signal
    // first, so only the rollup refresh is being waited for below.
    app.wait_replica().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let created = audit_wire::convert::timestamp("t", signal.created_at.as_ref().unwrap()).unwrap();
    integration_tests::wait_until(
        "the rollup to show the new signal",
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(25),
        async || {
            let total = analytics
                .get_metrics(pb::GetMetricsRequest {
                    time_range: range(created - TimeDelta::minutes(1), 2),
                    bucket_size: pb::BucketSize::Minute.into(),
                    ticker: "SPY".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .total
                .unwrap();
            (total.signals == 1).then_some(())
        },
    )
    .await;
}
