//! Shared set-up of the analytics tests (`tests/analytics_*.rs`): a
//! realistic history, the app configured for explicit rollup refreshes,
//! series and windows for trends and regressions, and small conversions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly on purpose"
)]

use crate::{TestApp, new_event, new_signal};
use audit_proto::v1 as pb;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use pb::{SignalLocation as L, SignalStatus as S};
use rand::{Rng, SeedableRng};

pub const TICKERS: [&str; 3] = ["NASDAQ:AAPL", "MSFT.US", "BTC-USD"];

/// A realistic history: 240 signals over the last 90 minutes, every path
/// through the pipeline, retries, HTTP failures, and a second batch of late
/// events back-dated into buckets that were already summarised.
pub async fn history(app: &TestApp) -> DateTime<Utc> {
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
    let pool = audit_db::build_pool(&crate::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
    writer.record_batch(late).await.unwrap();
    assert!(
        audit_writer::store::rollups::refresh(&pool).await.unwrap() > 0,
        "late events dirtied buckets"
    );
    app.wait_replica().await;
    start
}

pub async fn start_app() -> TestApp {
    TestApp::start_with(|writer, _| {
        writer.max_batch_items = 5_000;
        // The tests refresh explicitly, so what they compare is deterministic.
        writer.rollup_refresh_ms = 3_600_000;
        writer.analytics_refresh_secs = 3_600;
        writer.data_quality_secs = 3_600;
    })
    .await
}

/// What the writer's data-quality job does, run until every ended minute
/// the rollup refresh queued is checked and its findings stored.
pub async fn check_quality(app: &TestApp) {
    let pool = audit_db::build_pool(&crate::writer_args(app.primary_url.clone()).pool());
    while audit_writer::store::status::data_quality(&pool, Utc::now())
        .await
        .unwrap()
        .minutes
        > 0
    {}
}

pub fn range(start: DateTime<Utc>, minutes: i64) -> Option<pb::TimeRange> {
    Some(pb::TimeRange {
        start: Some(audit_wire::convert::to_timestamp(start)),
        end: Some(audit_wire::convert::to_timestamp(
            start + TimeDelta::minutes(minutes),
        )),
    })
}

/// What the writer's rollup and analytics jobs do, once each: the rollup
/// refresh hands its keys to the hourly analytics tables' refresh.
pub async fn refresh_analytics(app: &TestApp) {
    let pool = audit_db::build_pool(&crate::writer_args(app.primary_url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
    audit_writer::store::analytics::refresh(&pool, audit_writer::store::analytics::Minutes::All)
        .await
        .unwrap();
}

/// percentile_cont as PostgreSQL defines it, on sorted values.
pub fn percentile_cont(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - pos.floor())
}

pub fn ms(d: &Option<prost_types::Duration>) -> f64 {
    let d = d.unwrap();
    d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
}

pub fn nanos(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.unwrap();
    t.seconds * 1_000_000_000 + i64::from(t.nanos)
}

/// `counts[i]` signals for `ticker` in minute i after `start`.
pub async fn series(app: &TestApp, ticker: &str, start: DateTime<Utc>, counts: &[usize]) {
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

/// `n` signals of `ticker` in the 10 minutes after `from`, each forwarded
/// after `latency_ms`, `failed` of them with an HTTP 500.
pub fn window_batch(
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
