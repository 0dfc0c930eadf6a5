//! A deterministic pipeline history written through the writer.

use crate::Error;
use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use chrono::{DateTime, TimeDelta, Utc};
use pb::{SignalLocation as L, SignalStatus as S};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The writer, e.g. http://127.0.0.1:15051.
    #[arg(long, default_value = "http://127.0.0.1:15051")]
    writer: String,
    #[arg(long, default_value_t = 5_000)]
    signals: usize,
    /// History spread over the last this many hours.
    #[arg(long, default_value_t = 6)]
    hours: i64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Signals per RecordBatch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

pub const TICKERS: &[&str] = &[
    "NASDAQ:AAPL",
    "MSFT.US",
    "NVDA",
    "TSLA",
    "AMZN.US",
    "GOOGL",
    "META",
    "SPY",
    "QQQ",
    "IWM",
    "BTC-USD",
    "ETH/USD",
    "SOL-USD",
    "EUR-USD",
    "GBP/USD",
    "USD_JPY",
    "VOD.L",
    "SAP.DE",
    "BRK.B",
    "JPM",
];

fn uuid(rng: &mut StdRng) -> String {
    uuid::Uuid::from_u128(rng.random::<u128>() & !(0xf000 << 64) | (0x4000 << 64)).to_string()
}

fn event(
    rng: &mut StdRng,
    signal: &str,
    status: S,
    location: L,
    at: DateTime<Utc>,
) -> pb::NewEvent {
    pb::NewEvent {
        event_id: uuid(rng),
        signal_id: signal.into(),
        event_type: status.into(),
        location: location.into(),
        timestamp: Some(audit_wire::convert::to_timestamp(at)),
        worker_id: format!("worker-{}", rng.random_range(1..=8)),
        ..Default::default()
    }
}

/// One signal's life: the signal, its events in order, and events that
/// arrive late (sent with the next batch, stamped in the past).
fn life(
    rng: &mut StdRng,
    now: DateTime<Utc>,
    hours: i64,
) -> (pb::NewSignal, Vec<pb::NewEvent>, Vec<pb::NewEvent>) {
    let id = uuid(rng);
    let ticker = TICKERS[rng.random_range(0..TICKERS.len())];
    let t0 = now - TimeDelta::seconds(rng.random_range(60..hours * 3600));
    let price = f64::from(rng.random_range(100..100_000u32)) / 100.0;
    let signal = pb::NewSignal {
        signal_id: id.clone(),
        ticker: ticker.into(),
        side: if rng.random_bool(0.5) { "buy" } else { "sell" }.into(),
        action: ["open", "close", "scale_in"][rng.random_range(0..3)].into(),
        price,
        original_signal_json: format!(
            r#"{{"ticker":"{ticker}","price":{price},"strategy":"s{}"}}"#,
            rng.random_range(0..12)
        ),
        tags: if rng.random_bool(0.1) {
            vec!["vip".into()]
        } else {
            vec![]
        },
        received_at: Some(audit_wire::convert::to_timestamp(t0)),
    };
    let mut at = t0;
    let mut step = |rng: &mut StdRng, ms: u64| {
        // Log-normal-ish stage times.
        let factor: f64 = (rng.random::<f64>() * 2.5).exp();
        at += TimeDelta::milliseconds((ms as f64 * factor) as i64);
        at
    };
    let mut events = Vec::new();
    let mut late = Vec::new();
    let s = |rng: &mut StdRng, status, location, at| event(rng, &id, status, location, at);
    let t = step(rng, 5);
    events.push(s(rng, S::QueuedProcessing, L::ProcessingQueue, t));
    let t = step(rng, 20);
    events.push(s(rng, S::Processing, L::WorkerProcessing, t));
    if rng.random_bool(0.05) {
        // Worker crash and retry.
        let t = step(rng, 200);
        events.push(s(rng, S::Processing, L::WorkerProcessing, t));
    }
    match rng.random_range(0..100) {
        0..=7 => {
            let t = step(rng, 10);
            let mut e = s(rng, S::Rejected, L::Discarded, t);
            e.details = "risk check rejected the order: position limit".into();
            events.push(e);
        }
        8..=9 => {
            let t = step(rng, 50);
            let mut e = s(rng, S::Error, L::Discarded, t);
            e.error_info_json = r#"{"type":"validation","message":"malformed payload"}"#.into();
            events.push(e);
        }
        _ => {
            let t = step(rng, 10);
            events.push(s(rng, S::Approved, L::ApprovedQueue, t));
            let t = step(rng, 15);
            events.push(s(rng, S::QueuedForwarding, L::ApprovedQueue, t));
            let t = step(rng, 5);
            events.push(s(rng, S::Forwarding, L::WorkerForwarding, t));
            let roll = rng.random_range(0..100);
            if roll < 6 {
                let t = step(rng, 3_000);
                let mut e = s(rng, S::ForwardedTimeout, L::Completed, t);
                e.error_info_json = r#"{"type":"timeout","after_ms":5000}"#.into();
                events.push(e);
                let t = step(rng, 500);
                events.push(s(rng, S::Forwarding, L::WorkerForwarding, t));
            }
            let t = step(rng, 120);
            let mut done = s(rng, S::ForwardedSuccess, L::Completed, t);
            done.http_status = 200;
            done.response_data = r#"{"order_id":"ok","status":"accepted"}"#.into();
            if (6..10).contains(&roll) {
                done.event_type = S::ForwardedHttpError.into();
                done.http_status = [400, 429, 500, 502, 503][rng.random_range(0..5)];
                done.response_data = format!(r#"{{"error":"broker said {}"}}"#, done.http_status);
            } else if roll == 10 {
                done.event_type = S::ForwardedGenericError.into();
                done.http_status = 0;
                done.error_info_json =
                    r#"{"type":"connection","message":"connection reset by broker"}"#.into();
            }
            events.push(done);
        }
    }
    // One in twenty lives has its middle event reported late.
    if events.len() > 3 && rng.random_bool(0.05) {
        late.push(events.remove(events.len() / 2));
    }
    (signal, events, late)
}

pub async fn run(args: Args) -> Result<(), Error> {
    let mut writer = SignalWriterServiceClient::connect(args.writer.clone()).await?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let now = Utc::now();
    let mut late_from_previous = Vec::new();
    let (mut signals, mut events) = (0usize, 0usize);
    let mut left = args.signals;
    while left > 0 {
        let n = left.min(args.batch.max(1));
        left -= n;
        let mut batch = pb::RecordBatchRequest::default();
        let mut late = Vec::new();
        for _ in 0..n {
            let (signal, mut lived, mut late_ones) = life(&mut rng, now, args.hours.max(1));
            batch.signals.push(signal);
            batch.events.append(&mut lived);
            late.append(&mut late_ones);
        }
        batch.events.append(&mut late_from_previous);
        late_from_previous = late;
        let done = writer.record_batch(batch).await?.into_inner();
        signals += usize::try_from(done.signals_created).unwrap_or(0);
        events += usize::try_from(done.events_created).unwrap_or(0);
    }
    if !late_from_previous.is_empty() {
        let done = writer
            .record_batch(pb::RecordBatchRequest {
                signals: vec![],
                events: late_from_previous,
            })
            .await?
            .into_inner();
        events += usize::try_from(done.events_created).unwrap_or(0);
    }
    println!(
        "history: {signals} signals and {events} events written through {} (seed {})",
        args.writer, args.seed
    );
    Ok(())
}
