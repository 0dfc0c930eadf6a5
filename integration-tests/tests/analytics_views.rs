//! GetStageLatencies and GetTickerActivity, from the materialized views,
//! against recomputations from the signals' timelines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Text, Timestamptz};
use diesel_async::RunQueryDsl;
use integration_tests::analytics::*;
use integration_tests::channel;

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
