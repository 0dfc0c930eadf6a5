//! Error rollups (`signal_error_summary`): every row at every level equals a
//! recount of raw events, late failures included, and GetErrorBreakdown over
//! ranges that cut through minutes, hours and days equals a count of the raw
//! failures done here in Rust.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use integration_tests::{TestApp, channel, new_event, new_signal};
use pb::{SignalLocation as L, SignalStatus as S};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const TICKERS: [&str; 4] = ["NASDAQ:AAPL", "MSFT.US", "BTC-USD", "SPY"];

async fn start_app() -> TestApp {
    TestApp::start_with(|writer, _| {
        writer.max_batch_items = 5_000;
        // The tests refresh explicitly, so what they compare is deterministic.
        writer.rollup_refresh_ms = 3_600_000;
    })
    .await
}

/// A failure as the pipeline reports it: stage, error info, HTTP status.
fn failure(rng: &mut rand::rngs::StdRng) -> (S, L, &'static str, i32) {
    match rng.random_range(0..7) {
        0 => (S::ForwardedHttpError, L::Completed, "", 502),
        1 => (
            S::ForwardedHttpError,
            L::Completed,
            r#"{"type":"broker","detail":"rejected"}"#,
            503,
        ),
        2 => (
            S::ForwardedTimeout,
            L::Completed,
            r#"{"kind":"timeout"}"#,
            0,
        ),
        3 => (S::Error, L::Discarded, r#"{"type":"validation"}"#, 0),
        4 => (S::Error, L::Discarded, r#"{"detail":"no type"}"#, 0),
        5 => (S::Processing, L::WorkerProcessing, r#"{"type":"queue"}"#, 0),
        _ => (S::ForwardedSuccess, L::Completed, "", 200),
    }
}

/// 300 signals over the last three days, each with a processing event and
/// an outcome (most of them failures of some kind), then a second batch of
/// failures back-dated into buckets that were already summarised.
async fn failures(app: &TestApp) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now = Utc::now();
    let mut batch = pb::RecordBatchRequest::default();
    let mut late = pb::RecordBatchRequest::default();
    let mut ids = Vec::new();
    for i in 0..300 {
        let id = uuid::Uuid::new_v4().to_string();
        let t0 = now - TimeDelta::seconds(rng.random_range(600..3 * 86_400));
        let mut signal = new_signal(TICKERS[i % TICKERS.len()]);
        signal.signal_id = id.clone();
        signal.received_at = Some(audit_wire::convert::to_timestamp(t0));
        batch.signals.push(signal);
        batch.events.push(new_event(
            &id,
            S::Processing,
            L::WorkerProcessing,
            Some(t0 + TimeDelta::milliseconds(40)),
        ));
        let (status, location, error, http) = failure(&mut rng);
        let mut outcome = new_event(
            &id,
            status,
            location,
            Some(t0 + TimeDelta::milliseconds(rng.random_range(100..5_000))),
        );
        outcome.error_info_json = error.into();
        outcome.http_status = http;
        batch.events.push(outcome);
        ids.push((id, t0));
    }
    for (id, t0) in ids.iter().step_by(3) {
        let (status, location, error, http) = failure(&mut rng);
        let mut retry = new_event(id, status, location, Some(*t0 + TimeDelta::seconds(1)));
        retry.error_info_json = error.into();
        retry.http_status = http;
        retry.worker_id = "late-worker".into();
        late.events.push(retry);
    }
    let mut writer = app.writer.clone();
    writer.record_batch(batch).await.unwrap();
    let pool =
        audit_db::build_pool(&integration_tests::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
    writer.record_batch(late).await.unwrap();
    assert!(
        audit_writer::store::rollups::refresh(&pool).await.unwrap() > 0,
        "late failures dirtied buckets"
    );
    app.wait_replica().await;
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
    #[diesel(sql_type = Text)]
    stage: String,
    #[diesel(sql_type = Text)]
    error_type: String,
    #[diesel(sql_type = Integer)]
    http_status: i32,
}

#[derive(QueryableByName)]
struct Level {
    #[diesel(sql_type = Text)]
    period_type: String,
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    events: i64,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_row_matches_raw_events_including_late_ones() {
    let app = start_app().await;
    failures(&app).await;
    let mut db = app.replica().await;
    // Recount failures per bucket (all three sizes), ticker, stage, error
    // type and HTTP status straight from raw events; list rows that differ
    // or exist on one side only.
    let mismatches: Vec<Mismatch> = diesel::sql_query(
        "WITH raw AS ( \
            SELECT p.period::text AS period_type, s.normalised_ticker::text AS normalised_ticker, \
                   date_trunc(p.period, e.ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start, \
                   e.event_type::text AS stage, \
                   CASE WHEN e.error_info IS NULL THEN 'http' \
                        WHEN e.error_info ? 'type' THEN e.error_info ->> 'type' \
                        WHEN e.error_info ? 'kind' THEN e.error_info ->> 'kind' \
                        ELSE 'unknown' END AS error_type, \
                   coalesce(e.http_status, 0) AS http_status, count(*) AS events \
            FROM signal_events e JOIN signals s USING (signal_id) \
            CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS p(period) \
            WHERE e.error_info IS NOT NULL OR coalesce(e.http_status, 0) >= 400 \
            GROUP BY 1, 2, 3, 4, 5, 6), \
         m AS (SELECT period_type::text AS period_type, normalised_ticker::text AS normalised_ticker, \
                      period_start, stage::text AS stage, error_type::text AS error_type, http_status, events \
               FROM signal_error_summary) \
         SELECT coalesce(r.period_type, m.period_type) AS period_type, \
                coalesce(r.normalised_ticker, m.normalised_ticker) AS normalised_ticker, \
                coalesce(r.period_start, m.period_start) AS period_start, \
                coalesce(r.stage, m.stage) AS stage, coalesce(r.error_type, m.error_type) AS error_type, \
                coalesce(r.http_status, m.http_status) AS http_status \
         FROM raw r FULL JOIN m USING (period_type, normalised_ticker, period_start, stage, error_type, http_status) \
         WHERE r.events IS DISTINCT FROM m.events",
    )
    .load(&mut db)
    .await
    .unwrap();
    assert!(
        mismatches.is_empty(),
        "{} error rows disagree with raw events, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    // Every level is populated and adds up to the same total, which is also
    // the metrics rollup's error_events.
    let levels: Vec<Level> = diesel::sql_query(
        "SELECT period_type::text AS period_type, count(*) AS rows, sum(events)::bigint AS events \
         FROM signal_error_summary GROUP BY 1 \
         UNION ALL \
         SELECT 'metrics', count(*), sum(error_events)::bigint FROM signal_metrics_summary \
         WHERE period_type = 'minute' AND normalised_ticker <> '*' ORDER BY 1",
    )
    .load(&mut db)
    .await
    .unwrap();
    let names: Vec<&str> = levels.iter().map(|l| l.period_type.as_str()).collect();
    assert_eq!(names, ["day", "hour", "metrics", "minute"]);
    assert!(levels.iter().all(|l| l.rows > 0));
    assert!(
        levels.windows(2).all(|w| w[0].events == w[1].events),
        "{:?}",
        levels.iter().map(|l| l.events).collect::<Vec<_>>()
    );
}

/// One failed event, as read back from the replica.
#[derive(QueryableByName, Debug, Clone)]
struct Failed {
    #[diesel(sql_type = Timestamptz)]
    ts: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    ticker: String,
    #[diesel(sql_type = Text)]
    stage: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Jsonb>)]
    error_info: Option<serde_json::Value>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Integer>)]
    http_status: Option<i32>,
}

/// The breakdown of `failed` in `[from, to)` widened to whole minutes,
/// counted the plain way.
fn expected(
    failed: &[Failed],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: Option<&str>,
) -> [BTreeMap<String, i64>; 4] {
    let minute = TimeDelta::minutes(1);
    let from = from.duration_trunc(minute).unwrap();
    let to = if to.duration_trunc(minute).unwrap() == to {
        to
    } else {
        to.duration_trunc(minute).unwrap() + minute
    };
    let mut out: [BTreeMap<String, i64>; 4] = Default::default();
    for f in failed {
        if f.ts < from || f.ts >= to || ticker.is_some_and(|t| t != f.ticker) {
            continue;
        }
        let error_type = match &f.error_info {
            None => "http".to_owned(),
            Some(info) => match (info.get("type"), info.get("kind")) {
                (Some(serde_json::Value::String(t)), _)
                | (None, Some(serde_json::Value::String(t))) => t.clone(),
                _ => "unknown".to_owned(),
            },
        };
        let http = f.http_status.map_or("none".to_owned(), |s| s.to_string());
        for (map, key) in out
            .iter_mut()
            .zip([error_type, http, f.ticker.clone(), f.stage.clone()])
        {
            *map.entry(key).or_default() += 1;
        }
    }
    out
}

fn counted(counts: &[pb::ErrorCount]) -> BTreeMap<String, i64> {
    counts.iter().map(|c| (c.key.clone(), c.count)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn error_breakdown_over_any_range_matches_a_raw_count() {
    let app = start_app().await;
    failures(&app).await;
    let mut db = app.replica().await;
    let failed: Vec<Failed> = diesel::sql_query(
        "SELECT e.ts, s.normalised_ticker::text AS ticker, e.event_type::text AS stage, \
                e.error_info, e.http_status \
         FROM signal_events e JOIN signals s USING (signal_id) \
         WHERE e.error_info IS NOT NULL OR e.http_status >= 400",
    )
    .load(&mut db)
    .await
    .unwrap();
    assert!(failed.len() > 150, "{} failures", failed.len());
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let now = Utc::now();
    let at = |ago: TimeDelta| now - ago;
    // Ranges that start and end inside minutes, over minutes only, across
    // an hour, across a day boundary and over more than two whole days.
    let ranges = [
        (at(TimeDelta::hours(3 * 24)), now),
        (
            at(TimeDelta::seconds(2 * 86_400 + 3_733)),
            at(TimeDelta::seconds(4 * 3_600 + 77)),
        ),
        (
            at(TimeDelta::seconds(30 * 3_600 + 59)),
            at(TimeDelta::seconds(20 * 3_600 + 1)),
        ),
        (at(TimeDelta::seconds(5_000)), at(TimeDelta::seconds(1_234))),
        (at(TimeDelta::seconds(700)), at(TimeDelta::seconds(650))),
    ];
    let mut seen_failures = 0;
    for (from, to) in ranges {
        for ticker in [None, Some("BTCUSD")] {
            let answer = analytics
                .get_error_breakdown(pb::GetErrorBreakdownRequest {
                    time_range: Some(pb::TimeRange {
                        start: Some(audit_wire::convert::to_timestamp(from)),
                        end: Some(audit_wire::convert::to_timestamp(to)),
                    }),
                    ticker: ticker.map(|t| t.replace("USD", "-USD")).unwrap_or_default(),
                })
                .await
                .unwrap()
                .into_inner();
            let [by_type, by_http, by_ticker, by_stage] = expected(&failed, from, to, ticker);
            let context = format!("{from} .. {to} {ticker:?}");
            assert_eq!(counted(&answer.by_type), by_type, "{context}");
            assert_eq!(counted(&answer.by_http_status), by_http, "{context}");
            assert_eq!(counted(&answer.by_ticker), by_ticker, "{context}");
            assert_eq!(counted(&answer.by_stage), by_stage, "{context}");
            assert_eq!(answer.total, by_type.values().sum::<i64>(), "{context}");
            assert!(answer.as_of.is_some());
            seen_failures += answer.total;
        }
    }
    assert!(seen_failures > 300, "the ranges hold failures");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_breakdown_refuses_bad_arguments_naming_the_field() {
    let app = start_app().await;
    app.record_signal("AAPL").await;
    app.wait_replica().await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let now = Utc::now();
    let range = |from: DateTime<Utc>, to: DateTime<Utc>| {
        Some(pb::TimeRange {
            start: Some(audit_wire::convert::to_timestamp(from)),
            end: Some(audit_wire::convert::to_timestamp(to)),
        })
    };
    let cases = [
        ("time_range", None, ""),
        ("time_range", range(now, now - TimeDelta::hours(1)), ""),
        // More than 10,000 hours.
        ("time_range", range(now - TimeDelta::days(500), now), ""),
        ("ticker", range(now - TimeDelta::hours(1), now), "NOPE"),
    ];
    for (field, time_range, ticker) in cases {
        let status = analytics
            .get_error_breakdown(pb::GetErrorBreakdownRequest {
                time_range,
                ticker: ticker.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
}
