//! GetStageLatencies and GetTickerActivity, from the incrementally
//! maintained hourly tables, against recomputations from the signals'
//! timelines (late events for old hours included).

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

    // The tables are only as fresh as their last refresh.
    let before = analytics
        .get_stage_latencies(request("", pb::StageGrouping::None, false))
        .await
        .unwrap()
        .into_inner();
    assert!(before.stages.is_empty(), "{:?}", before.stages);
    refresh_analytics(&app).await;
    app.wait_replica().await;

    let all = analytics
        .get_stage_latencies(request("", pb::StageGrouping::None, false))
        .await
        .unwrap()
        .into_inner();
    check_stages("view", &all.stages, &expected, false);
    let refreshed: Refreshed = diesel::sql_query("SELECT refreshed_at FROM analytics_state")
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
async fn ticker_activity_comes_from_the_refreshed_hourly_table() {
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

    // The batch spans ten minutes and must land on one day, never more
    // than the writer's 300 s ahead of its clock: from five minutes back,
    // or, when that would cross midnight, the last ten minutes of
    // yesterday (starting at midnight itself put its last signals up to
    // nine minutes ahead in a day's first minutes, which the writer
    // refused).
    let five_back = Utc::now() - TimeDelta::minutes(5);
    let base = if five_back >= today {
        five_back
    } else {
        today - TimeDelta::minutes(10)
    };
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

    refresh_analytics(&app).await;
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

/// Every hourly analytics row recomputed from scratch (the old views'
/// definitions, per hour), as text, to compare with the incremental tables.
const FULL_STAGES: &str = "
WITH transitions AS (
    SELECT date_trunc('hour', e.ts, 'UTC') AS hour, s.normalised_ticker,
           COALESCE(lag(e.worker_id) OVER w, '') AS worker_id,
           lag(e.event_type) OVER w AS from_stage, e.event_type AS to_stage,
           (extract(epoch FROM e.ts - lag(e.ts) OVER w) * 1000000)::bigint AS us
    FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id
    WINDOW w AS (PARTITION BY e.signal_id ORDER BY e.ts, e.sequence)
), buckets AS (
    SELECT hour, normalised_ticker, worker_id, from_stage, to_stage, latency_bucket(us) AS bucket,
           count(*) AS n, sum(us) AS sum_us, max(us) AS max_us
    FROM transitions WHERE from_stage IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6
)
SELECT format('%s %s %s %s %s %s %s %s %s', hour, normalised_ticker, worker_id, from_stage,
              to_stage, sum(n), sum(sum_us), max(max_us), jsonb_object_agg(bucket, n)) AS line
FROM buckets GROUP BY hour, normalised_ticker, worker_id, from_stage, to_stage ORDER BY 1";

const STORED_STAGES: &str = "
SELECT format('%s %s %s %s %s %s %s %s %s', hour, normalised_ticker, worker_id, from_stage,
              to_stage, transitions, latency_sum_us, latency_max_us, latency_histogram) AS line
FROM stage_latency_hourly ORDER BY 1";

/// The by-ticker rows (and the '*' rows) are sums of the per-worker rows.
const STAGE_SUMS_DIFFER: &str = "
WITH w AS (SELECT hour, t.ticker, from_stage, to_stage, sum(transitions) AS n, sum(latency_sum_us) AS s,
                  max(latency_max_us) AS m
           FROM stage_latency_hourly
           CROSS JOIN LATERAL (VALUES (normalised_ticker::text), ('*')) AS t(ticker)
           GROUP BY 1, 2, 3, 4),
     b AS (SELECT hour, normalised_ticker::text AS ticker, from_stage, to_stage, transitions AS n,
                  latency_sum_us AS s, latency_max_us AS m
           FROM stage_latency_hourly_by_ticker)
SELECT format('%s %s %s %s', coalesce(w.hour, b.hour), coalesce(w.ticker, b.ticker),
              coalesce(w.from_stage, b.from_stage), coalesce(w.to_stage, b.to_stage)) AS line
FROM w FULL JOIN b USING (hour, ticker, from_stage, to_stage)
WHERE (w.n, w.s, w.m) IS DISTINCT FROM (b.n, b.s, b.m)";

const FULL_ACTIVITY: &str = "
SELECT format('%s %s %s %s %s %s %s %s %s %s %s', date_trunc('hour', created_at, 'UTC'),
              normalised_ticker, count(*),
              count(*) FILTER (WHERE current_status = 'forwarded_success'),
              count(*) FILTER (WHERE current_status IN ('rejected', 'discarded')),
              count(*) FILTER (WHERE current_status IN ('forwarded_timeout', 'forwarded_http_error',
                                                        'forwarded_generic_error', 'error')),
              count(*) FILTER (WHERE NOT signal_status_is_terminal(current_status)),
              sum(error_count), sum(retry_count), count(total_processing_time),
              COALESCE(sum((extract(epoch FROM total_processing_time) * 1000000)::bigint), 0)) AS line
FROM signals GROUP BY date_trunc('hour', created_at, 'UTC'), normalised_ticker ORDER BY 1";

const STORED_ACTIVITY: &str = "
SELECT format('%s %s %s %s %s %s %s %s %s %s %s', hour, normalised_ticker, signals, succeeded,
              rejected, failed, in_flight, errors, retries, processing_count, processing_sum_us) AS line
FROM ticker_activity_hourly ORDER BY 1";

#[derive(QueryableByName, Debug, PartialEq)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

async fn lines(db: &mut diesel_async::AsyncPgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Line>(db)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect()
}

/// The incremental tables hold exactly what a full recomputation gives,
/// after a first pass and after late events for old hours: a late event
/// splits a transition filed under a LATER hour than its own, and a new
/// event changes the activity of its signal's creation hour.
#[tokio::test(flavor = "multi_thread")]
async fn the_hourly_tables_equal_a_full_recomputation_after_late_events() {
    let app = start_app().await;
    history(&app).await;
    refresh_analytics(&app).await;
    let mut db = app.primary().await;
    let check = async |db: &mut diesel_async::AsyncPgConnection, when: &str| {
        let stored = lines(db, STORED_STAGES).await;
        assert!(!stored.is_empty(), "{when}");
        assert_eq!(stored, lines(db, FULL_STAGES).await, "{when}: stages");
        assert_eq!(
            lines(db, STAGE_SUMS_DIFFER).await,
            Vec::<String>::new(),
            "{when}: by ticker"
        );
        assert_eq!(
            lines(db, STORED_ACTIVITY).await,
            lines(db, FULL_ACTIVITY).await,
            "{when}: activity"
        );
    };
    check(&mut db, "first pass").await;

    // A signal received five hours ago and processed now; refreshed.
    let hour = TimeDelta::hours(1);
    let now = Utc::now();
    let mut writer = app.writer.clone();
    let mut batch = pb::RecordBatchRequest::default();
    let mut signal = integration_tests::new_signal("LATE");
    let id = uuid::Uuid::new_v4().to_string();
    signal.signal_id = id.clone();
    signal.received_at = Some(audit_wire::convert::to_timestamp(now - hour * 5));
    batch.signals.push(signal);
    batch.events.push(integration_tests::new_event(
        &id,
        pb::SignalStatus::Processing,
        pb::SignalLocation::WorkerProcessing,
        Some(now),
    ));
    writer.record_batch(batch).await.unwrap();
    refresh_analytics(&app).await;
    check(&mut db, "new signal").await;

    // Late: an event stamped three hours ago, between the two. It splits
    // received -> processing (filed under now's hour) in two, and only its
    // own minute, three hours back, is dirty.
    let mut late = integration_tests::new_event(
        &id,
        pb::SignalStatus::QueuedProcessing,
        pb::SignalLocation::ProcessingQueue,
        Some(now - hour * 3),
    );
    late.worker_id = "late-worker-2".into();
    writer
        .record_batch(pb::RecordBatchRequest {
            events: vec![late],
            ..Default::default()
        })
        .await
        .unwrap();
    refresh_analytics(&app).await;
    check(&mut db, "late event").await;
    let split: Vec<String> = lines(&mut db, STORED_STAGES)
        .await
        .into_iter()
        .filter(|l| l.contains(" LATE "))
        .collect();
    assert_eq!(split.len(), 2, "{split:?}");
    assert!(
        split
            .iter()
            .any(|l| l.contains("late-worker-2 queued_processing processing"))
    );
}

/// The writer's scheduled pass takes only minutes that have ended: a minute
/// still being written (here two minutes ahead, within the clock-skew
/// allowance) stays queued for a later pass, which builds it, and `as_of`
/// says up to which minute the tables are whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_pass_leaves_the_minute_in_progress_for_a_later_one() {
    use audit_writer::store::{analytics, rollups};
    let app = start_app().await;
    let minute = TimeDelta::minutes(1);
    let now = Utc::now();
    let past = (now - minute * 10).duration_trunc(minute).unwrap();
    let ahead = (now + minute * 2).duration_trunc(minute).unwrap();
    let mut batch = pb::RecordBatchRequest::default();
    for (ticker, at) in [("PAST", past), ("AHEAD", ahead)] {
        let mut signal = integration_tests::new_signal(ticker);
        let id = uuid::Uuid::new_v4().to_string();
        signal.signal_id = id.clone();
        signal.received_at = Some(audit_wire::convert::to_timestamp(at));
        batch.signals.push(signal);
        batch.events.push(integration_tests::new_event(
            &id,
            pb::SignalStatus::Processing,
            pb::SignalLocation::WorkerProcessing,
            Some(at + TimeDelta::seconds(1)),
        ));
    }
    app.writer.clone().record_batch(batch).await.unwrap();

    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    rollups::refresh(&pool).await.unwrap();
    let before = Utc::now();
    analytics::refresh(&pool, analytics::Minutes::Closed)
        .await
        .unwrap();
    let after = Utc::now();
    let mut db = app.primary().await;
    let rows = async |db: &mut diesel_async::AsyncPgConnection| {
        lines(
            db,
            "SELECT format('stage %s %s', minute, normalised_ticker) AS line FROM stage_latency_minutely \
             UNION ALL SELECT format('activity %s %s', minute, normalised_ticker) FROM ticker_activity_minutely \
             UNION ALL SELECT format('queued %s %s', bucket_minute, normalised_ticker) FROM analytics_dirty \
             ORDER BY 1",
        )
        .await
    };
    let pg = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S+00").to_string();
    assert_eq!(
        rows(&mut db).await,
        [
            format!("activity {} PAST", pg(past)),
            format!("queued {} AHEAD", pg(ahead)),
            format!("stage {} PAST", pg(past)),
        ]
    );
    let as_of = diesel::sql_query("SELECT refreshed_at FROM analytics_state")
        .get_result::<Refreshed>(&mut db)
        .await
        .unwrap()
        .refreshed_at;
    // The minute the pass began in (or the migration's own time, if that
    // was later within it): never up to the events queued ahead.
    let floor = before.duration_trunc(minute).unwrap();
    assert!(
        as_of >= floor && as_of <= after,
        "{as_of} vs {before}..{after}"
    );

    analytics::refresh(&pool, analytics::Minutes::All)
        .await
        .unwrap();
    assert_eq!(
        rows(&mut db).await,
        [
            format!("activity {} PAST", pg(past)),
            format!("activity {} AHEAD", pg(ahead)),
            format!("stage {} PAST", pg(past)),
            format!("stage {} AHEAD", pg(ahead)),
        ]
    );
}
