//! Issue 4: rollups stay exact against raw events (late ones included),
//! merged percentiles stay within 2% of percentile_cont, and the analytics
//! RPCs' numbers match independent computations on raw data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use integration_tests::{TestApp, channel, new_event, new_signal};
use pb::{SignalLocation as L, SignalStatus as S};
use rand::{Rng, SeedableRng};

const TICKERS: [&str; 3] = ["NASDAQ:AAPL", "MSFT.US", "BTC-USD"];

/// A realistic history: 240 signals over the last 90 minutes, every path
/// through the pipeline, retries, HTTP failures, and a second batch of late
/// events back-dated into buckets that were already summarised.
async fn history(app: &TestApp) -> DateTime<Utc> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let start = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::minutes(90);
    let mut batch = pb::RecordBatchRequest::default();
    let mut late = pb::RecordBatchRequest::default();
    for i in 0..240 {
        let id = uuid::Uuid::new_v4().to_string();
        let t0 = start + TimeDelta::seconds(rng.random_range(0..80 * 60));
        let mut signal = new_signal(TICKERS[i % 3]);
        signal.signal_id = id.clone();
        signal.received_at = Some(audit_wire::convert::to_timestamp(t0));
        batch.signals.push(signal);
        let mut at = t0;
        let mut step = |status: S, location: L, ms: i64, rng: &mut rand::rngs::StdRng| {
            at += TimeDelta::milliseconds(ms + rng.random_range(0..ms.max(1)));
            new_event(&id, status, location, Some(at))
        };
        batch
            .events
            .push(step(S::QueuedProcessing, L::ProcessingQueue, 20, &mut rng));
        batch
            .events
            .push(step(S::Processing, L::WorkerProcessing, 50, &mut rng));
        match rng.random_range(0..10) {
            0 => batch
                .events
                .push(step(S::Rejected, L::Discarded, 30, &mut rng)),
            1 => {
                let mut e = step(S::Error, L::Discarded, 500, &mut rng);
                e.error_info_json = r#"{"type":"validation","detail":"bad payload"}"#.into();
                batch.events.push(e);
            }
            n => {
                batch
                    .events
                    .push(step(S::Approved, L::ApprovedQueue, 40, &mut rng));
                batch
                    .events
                    .push(step(S::Forwarding, L::WorkerForwarding, 100, &mut rng));
                let mut done = step(S::ForwardedSuccess, L::Completed, 200 * n, &mut rng);
                if n == 2 {
                    done.event_type = S::ForwardedHttpError.into();
                    done.http_status = 502;
                } else if n == 3 {
                    done.event_type = S::ForwardedTimeout.into();
                    done.error_info_json = r#"{"kind":"timeout"}"#.into();
                } else {
                    done.http_status = 200;
                }
                // Every fifth signal gets a late retry, recorded later but
                // stamped inside its original life.
                if i % 5 == 0 {
                    let mut retry = new_event(
                        &id,
                        S::Forwarding,
                        L::WorkerForwarding,
                        Some(t0 + TimeDelta::milliseconds(5)),
                    );
                    retry.worker_id = "late-worker".into();
                    late.events.push(retry);
                }
                batch.events.push(done);
            }
        }
    }
    let mut writer = app.writer.clone();
    writer.record_batch(batch).await.unwrap();
    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
    writer.record_batch(late).await.unwrap();
    assert!(
        audit_writer::store::rollups::refresh(&pool).await.unwrap() > 0,
        "late events dirtied buckets"
    );
    app.wait_replica().await;
    start
}

async fn start_app() -> TestApp {
    TestApp::start_with(|writer, _| {
        writer.max_batch_items = 5_000;
        // The tests refresh explicitly, so what they compare is deterministic.
        writer.rollup_refresh_ms = 3_600_000;
    })
    .await
}

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

fn range(start: DateTime<Utc>, minutes: i64) -> Option<pb::TimeRange> {
    Some(pb::TimeRange {
        start: Some(audit_wire::convert::to_timestamp(start)),
        end: Some(audit_wire::convert::to_timestamp(
            start + TimeDelta::minutes(minutes),
        )),
    })
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

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_refreshes_rollups_by_itself() {
    let app = TestApp::start_with(|writer, _| writer.rollup_refresh_ms = 50).await;
    let (signal, _) = app.record_signal("SPY").await;
    // The ticker check reads `signals` on the replica: let it see the signal
    // first, so only the rollup refresh is being waited for below.
    app.wait_replica().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let created = audit_wire::convert::timestamp("t", signal.created_at.as_ref().unwrap()).unwrap();
    for _ in 0..200 {
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
        if total.signals == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the rollup never showed the new signal");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_events_ranks_highlights_and_respects_filters() {
    let app = start_app().await;
    let mut batch = pb::RecordBatchRequest::default();
    let texts = [
        (
            "AAPL",
            "broker rejected order: insufficient margin",
            r#"{"type":"broker","message":"margin call"}"#,
        ),
        ("AAPL", "forwarded to broker, accepted", ""),
        (
            "MSFT",
            "broker timeout after 5s, margin check skipped",
            r#"{"type":"timeout"}"#,
        ),
        (
            "BTC-USD",
            "validation failed: price outside band",
            r#"{"type":"validation"}"#,
        ),
    ];
    let mut ids = Vec::new();
    for (ticker, details, error) in texts {
        let id = uuid::Uuid::new_v4().to_string();
        let mut signal = new_signal(ticker);
        signal.signal_id = id.clone();
        batch.signals.push(signal);
        let mut event = new_event(&id, S::Processing, L::WorkerProcessing, None);
        event.details = details.into();
        event.error_info_json = error.into();
        batch.events.push(event);
        ids.push(id);
    }
    // Eight more that mention one word 1..=8 times: ts_rank grows with the
    // count, so the only right order is most mentions first (a wrong sort
    // key gets this order by chance once in 8! runs).
    let mut by_mentions = Vec::new();
    for mentions in 1..=8 {
        let id = uuid::Uuid::new_v4().to_string();
        let mut signal = new_signal("SPY");
        signal.signal_id = id.clone();
        batch.signals.push(signal);
        let mut event = new_event(&id, S::Processing, L::WorkerProcessing, None);
        event.details = format!("fill report:{}", " slippage noted".repeat(mentions));
        batch.events.push(event);
        by_mentions.push(id);
    }
    by_mentions.reverse();
    let token = app
        .writer
        .clone()
        .record_batch(batch)
        .await
        .unwrap()
        .into_inner()
        .consistency_token;
    let mut reader = app.reader.clone();
    reader
        .get_signal(pb::GetSignalRequest {
            signal_id: ids[0].clone(),
            consistency_token: token,
        })
        .await
        .unwrap();
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let search = |query: &str, filter: Option<pb::SignalFilter>| pb::SearchEventsRequest {
        query: query.into(),
        filter,
        ..Default::default()
    };
    let hits = analytics
        .search_events(search("margin", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    let found: Vec<&str> = hits
        .iter()
        .map(|h| h.event.as_ref().unwrap().signal_id.as_str())
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&ids[0].as_str()) && found.contains(&ids[2].as_str()));
    assert!(
        hits.iter().all(|h| h.snippet.contains("[margin]")),
        "{:?}",
        hits.iter().map(|h| &h.snippet).collect::<Vec<_>>()
    );
    assert!(hits[0].rank >= hits[1].rank);

    let hits = analytics
        .search_events(search("slippage", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    let found: Vec<&str> = hits
        .iter()
        .map(|h| h.event.as_ref().unwrap().signal_id.as_str())
        .collect();
    assert_eq!(found, by_mentions, "best rank first");
    assert!(hits.windows(2).all(|w| w[0].rank > w[1].rank));

    // Web search syntax: a phrase and an exclusion.
    let hits = analytics
        .search_events(search("broker -timeout", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    let found: Vec<&str> = hits
        .iter()
        .map(|h| h.event.as_ref().unwrap().signal_id.as_str())
        .collect();
    assert!(
        found.contains(&ids[0].as_str())
            && found.contains(&ids[1].as_str())
            && !found.contains(&ids[2].as_str())
    );
    // Combined with a ListSignals filter.
    let only_msft = pb::SignalFilter {
        normalised_ticker: "MSFT".into(),
        ..Default::default()
    };
    let hits = analytics
        .search_events(search("margin", Some(only_msft)))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].event.as_ref().unwrap().signal_id, ids[2]);
    // Error info is searched too.
    let hits = analytics
        .search_events(search("validation", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);

    let status = analytics
        .search_events(search("  ", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("query"));
}

#[tokio::test(flavor = "multi_thread")]
async fn data_quality_finds_each_kind_of_problem_with_ids() {
    let app = start_app().await;
    let start = history(&app).await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let request = pb::CheckDataQualityRequest {
        stuck_after: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        summary_range: range(start, 120),
        max_ids: 0,
    };
    let clean = analytics
        .check_data_quality(request)
        .await
        .unwrap()
        .into_inner();
    let count = |r: &pb::CheckDataQualityResponse, kind: pb::FindingKind| {
        r.findings
            .iter()
            .find(|f| f.kind == kind as i32)
            .map(|f| (f.count, f.ids.clone()))
            .unwrap()
    };
    assert_eq!(count(&clean, pb::FindingKind::OrphanEvents).0, 0);
    assert_eq!(count(&clean, pb::FindingKind::CounterMismatch).0, 0);
    assert_eq!(count(&clean, pb::FindingKind::SummaryMismatch).0, 0);
    // History signals that never reached a terminal status are stuck (their
    // last event is minutes old); every one of them must be listed.
    let mut db = app.replica().await;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let N { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM signals WHERE current_status::text NOT IN ('rejected','forwarded_success', \
         'forwarded_timeout','forwarded_http_error','forwarded_generic_error','discarded','error')",
    )
    .get_result(&mut db)
    .await
    .unwrap();
    assert_eq!(count(&clean, pb::FindingKind::StuckSignals).0, n);

    // Break one of each thing behind the services' backs.
    let mut primary = app.primary().await;
    use diesel_async::SimpleAsyncConnection;
    primary
        .batch_execute(
            "UPDATE signals SET error_count = error_count + 7 WHERE signal_id = (SELECT signal_id FROM signals ORDER BY signal_id LIMIT 1); \
             DELETE FROM signal_event_ids WHERE event_id = (SELECT event_id FROM signal_events ORDER BY event_id LIMIT 1); \
             UPDATE signal_metrics_summary SET total_events = total_events + 1 \
               WHERE metric_id = (SELECT min(metric_id) FROM signal_metrics_summary WHERE period_type = 'minute');",
        )
        .await
        .unwrap();
    app.wait_replica().await;
    let broken = analytics
        .check_data_quality(request)
        .await
        .unwrap()
        .into_inner();
    let (orphans, orphan_ids) = count(&broken, pb::FindingKind::OrphanEvents);
    assert_eq!(orphans, 1);
    assert_eq!(orphan_ids.len(), 1);
    let (counters, counter_ids) = count(&broken, pb::FindingKind::CounterMismatch);
    assert_eq!(counters, 1);
    assert!(uuid::Uuid::parse_str(&counter_ids[0]).is_ok());
    let (summaries, summary_ids) = count(&broken, pb::FindingKind::SummaryMismatch);
    assert_eq!(summaries, 1, "{summary_ids:?}");
    assert!(summary_ids[0].starts_with("minute "));
}

/// percentile_cont as PostgreSQL defines it, on sorted values.
fn percentile_cont(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - pos.floor())
}

fn ms(d: &Option<prost_types::Duration>) -> f64 {
    let d = d.unwrap();
    d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
}

#[derive(QueryableByName)]
struct SignalTicker {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    normalised_ticker: String,
}

#[derive(QueryableByName)]
struct Refreshed {
    #[diesel(sql_type = Timestamptz)]
    refreshed_at: DateTime<Utc>,
}

/// Transition latencies in ms by (group, from, to), computed here.
type Transitions = std::collections::HashMap<(String, i32, i32), Vec<f64>>;

/// Compares an answer with the recomputation: the same transitions, counts
/// exact, averages and maxima exact (to the microsecond the RPC rounds to),
/// percentiles exact or within 2% of percentile_cont.
fn check_stages(what: &str, stages: &[pb::StageLatency], expected: &Transitions, exact: bool) {
    assert_eq!(stages.len(), expected.len(), "{what}: {stages:?}");
    for stage in stages {
        let key = (stage.group.clone(), stage.from_status, stage.to_status);
        let mut values = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{what}: unexpected {key:?}"))
            .clone();
        values.sort_by(f64::total_cmp);
        assert_eq!(stage.count as usize, values.len(), "{what} {key:?}");
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        assert!((ms(&stage.avg) - avg).abs() < 0.002, "{what} {key:?} avg");
        assert!(
            (ms(&stage.max) - values[values.len() - 1]).abs() < 0.002,
            "{what} {key:?} max"
        );
        for (q, got) in [(0.5, &stage.p50), (0.95, &stage.p95), (0.99, &stage.p99)] {
            let want = percentile_cont(&values, q);
            let ok = if exact {
                (ms(got) - want).abs() < 0.01
            } else {
                (ms(got) - want).abs() / want <= 0.02
            };
            assert!(ok, "{what} {key:?} p{q}: {} vs {want}", ms(got));
        }
    }
}

fn nanos(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.unwrap();
    t.seconds * 1_000_000_000 + i64::from(t.nanos)
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_latencies_match_a_recomputation_from_the_timelines() {
    let app = start_app().await;
    let start = history(&app).await;
    // Independent computation: every timeline read through ListEvents, in
    // order, transitions measured here, with each signal's ticker.
    let mut reader = app.reader.clone();
    let mut events = Vec::new();
    let mut request = pb::ListEventsRequest {
        page_size: 1000,
        ..Default::default()
    };
    loop {
        let page = reader
            .list_events(request.clone())
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let mut db = app.replica().await;
    let tickers: std::collections::HashMap<String, String> =
        diesel::sql_query("SELECT signal_id::text AS id, normalised_ticker FROM signals")
            .load::<SignalTicker>(&mut db)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.normalised_ticker))
            .collect();
    let micros = |e: &pb::SignalEvent| {
        let t = e.timestamp.unwrap();
        t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
    };
    events.sort_by_key(|e| (e.signal_id.clone(), micros(e), e.sequence));
    let (mut expected, mut by_ticker) = (Transitions::default(), Transitions::default());
    for pair in events.windows(2) {
        if pair[0].signal_id == pair[1].signal_id {
            let ms = (micros(&pair[1]) - micros(&pair[0])) as f64 / 1000.0;
            let (from, to) = (pair[0].event_type, pair[1].event_type);
            let ticker = tickers[&pair[0].signal_id].clone();
            expected
                .entry((String::new(), from, to))
                .or_default()
                .push(ms);
            by_ticker.entry((ticker, from, to)).or_default().push(ms);
        }
    }
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let request =
        |ticker: &str, group_by: pb::StageGrouping, exact: bool| pb::GetStageLatenciesRequest {
            time_range: range(start - TimeDelta::minutes(1), 180),
            ticker: ticker.into(),
            group_by: group_by.into(),
            exact,
        };

    // The view is only as fresh as its last refresh.
    let before = analytics
        .get_stage_latencies(request("", pb::StageGrouping::None, false))
        .await
        .unwrap()
        .into_inner();
    assert!(before.stages.is_empty(), "{:?}", before.stages);
    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh_materialized_views(&pool)
        .await
        .unwrap();
    app.wait_replica().await;

    let all = analytics
        .get_stage_latencies(request("", pb::StageGrouping::None, false))
        .await
        .unwrap()
        .into_inner();
    check_stages("view", &all.stages, &expected, false);
    let refreshed: Refreshed = diesel::sql_query(
        "SELECT refreshed_at FROM matview_refreshes WHERE view_name = 'mv_hourly_stage_latencies'",
    )
    .get_result(&mut db)
    .await
    .unwrap();
    assert_eq!(
        nanos(&all.as_of),
        refreshed.refreshed_at.timestamp_nanos_opt().unwrap(),
        "as_of is the view's refresh"
    );
    assert!(nanos(&all.as_of) > nanos(&before.as_of));
    // The range widened to whole hours.
    let covered = all.time_range.unwrap();
    let hour = TimeDelta::hours(1);
    let first = (start - TimeDelta::minutes(1))
        .duration_trunc(hour)
        .unwrap();
    let last = (start + TimeDelta::minutes(179))
        .duration_trunc(hour)
        .unwrap()
        + hour;
    assert_eq!(
        (nanos(&covered.start), nanos(&covered.end)),
        (
            first.timestamp_nanos_opt().unwrap(),
            last.timestamp_nanos_opt().unwrap()
        )
    );

    let per_ticker = analytics
        .get_stage_latencies(request("", pb::StageGrouping::Ticker, false))
        .await
        .unwrap()
        .into_inner()
        .stages;
    check_stages("per ticker", &per_ticker, &by_ticker, false);
    let aapl: Transitions = by_ticker
        .iter()
        .filter(|((ticker, _, _), _)| ticker == "AAPL")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let only_aapl = analytics
        .get_stage_latencies(request("NASDAQ:AAPL", pb::StageGrouping::Ticker, false))
        .await
        .unwrap()
        .into_inner()
        .stages;
    check_stages("AAPL", &only_aapl, &aapl, false);

    // Exact percentiles from raw events, as of the replica.
    let exact = analytics
        .get_stage_latencies(request("", pb::StageGrouping::None, true))
        .await
        .unwrap()
        .into_inner();
    check_stages("exact", &exact.stages, &expected, true);
    assert_eq!(
        nanos(&exact.time_range.unwrap().start),
        (start - TimeDelta::minutes(1))
            .timestamp_nanos_opt()
            .unwrap()
    );

    let by_worker = analytics
        .get_stage_latencies(request("AAPL", pb::StageGrouping::Worker, false))
        .await
        .unwrap()
        .into_inner()
        .stages;
    assert!(by_worker.iter().any(|s| s.group == "late-worker"));
    assert!(
        by_worker
            .iter()
            .all(|s| s.group == "late-worker" || s.group == "worker-1" || s.group.is_empty())
    );
    let exact_by_worker = analytics
        .get_stage_latencies(request("AAPL", pb::StageGrouping::Worker, true))
        .await
        .unwrap()
        .into_inner()
        .stages;
    let key = |s: &pb::StageLatency| (s.group.clone(), s.from_status, s.to_status, s.count);
    let mut view_keys: Vec<_> = by_worker.iter().map(key).collect();
    let mut exact_keys: Vec<_> = exact_by_worker.iter().map(key).collect();
    view_keys.sort();
    exact_keys.sort();
    assert_eq!(
        view_keys, exact_keys,
        "view and raw events agree per worker"
    );
}

/// `counts[i]` signals for `ticker` in minute i after `start`.
async fn series(app: &TestApp, ticker: &str, start: DateTime<Utc>, counts: &[usize]) {
    let mut batch = pb::RecordBatchRequest::default();
    for (minute, &n) in counts.iter().enumerate() {
        for k in 0..n {
            let mut signal = new_signal(ticker);
            signal.received_at = Some(audit_wire::convert::to_timestamp(
                start + TimeDelta::minutes(minute as i64) + TimeDelta::seconds(k as i64 % 50),
            ));
            batch.signals.push(signal);
        }
    }
    app.writer.clone().record_batch(batch).await.unwrap();
}

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

/// `n` signals of `ticker` in the 10 minutes after `from`, each forwarded
/// after `latency_ms`, `failed` of them with an HTTP 500.
fn window_batch(
    ticker: &str,
    from: DateTime<Utc>,
    n: usize,
    latency_ms: i64,
    failed: usize,
) -> pb::RecordBatchRequest {
    let mut batch = pb::RecordBatchRequest::default();
    for i in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        let t0 = from + TimeDelta::seconds((i * 600 / n) as i64);
        let mut signal = new_signal(ticker);
        signal.signal_id = id.clone();
        signal.received_at = Some(audit_wire::convert::to_timestamp(t0));
        batch.signals.push(signal);
        let mut done = new_event(
            &id,
            S::ForwardedSuccess,
            L::Completed,
            Some(t0 + TimeDelta::milliseconds(latency_ms)),
        );
        if i < failed {
            done.event_type = S::ForwardedHttpError.into();
            done.http_status = 500;
        }
        batch.events.push(done);
    }
    batch
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

#[tokio::test(flavor = "multi_thread")]
async fn ticker_activity_comes_from_the_refreshed_materialized_view() {
    let app = start_app().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let today = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    let request = || pb::GetTickerActivityRequest {
        time_range: Some(pb::TimeRange {
            start: Some(audit_wire::convert::to_timestamp(
                today - TimeDelta::days(2),
            )),
            end: Some(audit_wire::convert::to_timestamp(
                today + TimeDelta::days(1),
            )),
        }),
        ticker: String::new(),
    };
    let before = analytics
        .get_ticker_activity(request())
        .await
        .unwrap()
        .into_inner();
    assert!(before.days.is_empty());

    let base = Utc::now() - TimeDelta::minutes(5);
    app.writer
        .clone()
        .record_batch(window_batch("VIEW", base, 10, 250, 3))
        .await
        .unwrap();
    // Not refreshed yet: the view still shows the old contents.
    app.wait_replica().await;
    assert!(
        analytics
            .get_ticker_activity(request())
            .await
            .unwrap()
            .into_inner()
            .days
            .is_empty()
    );

    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh_materialized_views(&pool)
        .await
        .unwrap();
    app.wait_replica().await;
    let after = analytics
        .get_ticker_activity(request())
        .await
        .unwrap()
        .into_inner();
    let days: Vec<&pb::TickerActivity> = after.days.iter().filter(|d| d.ticker == "VIEW").collect();
    assert_eq!(days.len(), 1, "{:?}", after.days);
    let day = days[0];
    assert_eq!(
        (day.signals, day.succeeded, day.failed, day.errors),
        (10, 7, 3, 3)
    );
    assert!((ms(&day.avg_processing_time) - 250.0).abs() < 1e-6);
    let as_of = |r: &pb::GetTickerActivityResponse| {
        r.as_of.unwrap().seconds * 1_000_000_000 + i64::from(r.as_of.unwrap().nanos)
    };
    assert!(
        as_of(&after) > as_of(&before),
        "as_of moves with the refresh"
    );
}

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
