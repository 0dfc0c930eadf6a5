//! RecordSignal over gRPC, one signal per call: the path group commit is for.
//!
//! [`closed_loop`] keeps `--unary-concurrency` calls in flight (each caller
//! sends its next signal when the last one is answered): peak throughput.
//! [`paced`] starts calls on a fixed schedule whatever the answers do
//! (open loop), and measures each call from the moment it was due, so a
//! stall delays the calls behind it and shows in their latency instead of
//! silently slowing the schedule (no coordinated omission).

use super::{Context, Measured, Meter, Tally, Unit, WriterClient, join, record_signal};
use crate::BenchError;
use crate::args::PhaseName;
use crate::measure::{histogram, quantile_ms, record};
use hdrhistogram::Histogram;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

pub async fn closed_loop(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let clients = cx.clients().await?;
    let workload = cx.workload(PhaseName::Unary);
    let budget = cx.budget(cx.args.signals);
    let meter = Meter::start(cx.writer);
    let mut workers = JoinSet::new();
    for caller in 0..cx.args.unary_concurrency {
        let client = clients[caller % clients.len()].clone();
        let budget = budget.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            while let Some(items) = budget.claim(1) {
                for i in items {
                    let started = Instant::now();
                    tally.refused += record_signal(&client, workload.signal(i)).await?;
                    tally.done(1, started);
                }
            }
            Ok(tally)
        });
    }
    let tally = join(workers).await?;
    Ok(Measured::new(
        format!(
            "{} callers over {} connections",
            cx.args.unary_concurrency, cx.args.channels
        ),
        Unit::Signals,
        "call",
        tally,
        meter.stop(),
    ))
}

/// Pacer resolution: calls due within one tick start together.
const TICK: Duration = Duration::from_millis(1);

/// RecordSignal paced at `rate` (unary-half).
pub async fn paced_signals(cx: &Context<'_>, rate: f64) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::UnaryHalf);
    let budget = cx.budget(cx.args.signals);
    paced(cx, rate, Unit::Signals, move |client: &WriterClient| {
        let i = budget.claim(1)?.start;
        let client = client.clone();
        let signal = workload.signal(i);
        let call: Call = Box::pin(async move { record_signal(&client, signal).await });
        Some(call)
    })
    .await
}

/// One call of a paced phase, ready to be sent: how often it was refused.
pub type Call = Pin<Box<dyn Future<Output = Result<usize, BenchError>> + Send>>;

/// Calls `next` makes (until it has none left), started at `rate` per
/// second over the writer connections in turn.
pub async fn paced<F>(
    cx: &Context<'_>,
    rate: f64,
    unit: Unit,
    mut next: F,
) -> Result<Measured, BenchError>
where
    F: FnMut(&WriterClient) -> Option<Call>,
{
    let clients = cx.clients().await?;
    let rate = rate.max(1.0);
    // Calls still unanswered beyond this wait for answers: the schedule slips
    // (and the slip is counted) but the bench never grows without bound.
    let max_outstanding = cx.args.unary_concurrency.saturating_mul(8).max(64);
    let meter = Meter::start(cx.writer);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut calls: JoinSet<Result<Answer, BenchError>> = JoinSet::new();
    let mut tally = Tally::default();
    // How late calls started: when this grows, the load generator itself
    // (not the writer) fell behind the schedule.
    let mut lag = histogram();
    let mut sent = 0usize;
    'schedule: loop {
        ticker.tick().await;
        let due_by_now = (started.elapsed().as_secs_f64() * rate) as usize + 1;
        while sent < due_by_now && calls.len() < max_outstanding {
            let Some(call) = next(&clients[sent % clients.len()]) else {
                break 'schedule;
            };
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            calls.spawn(async move {
                let lag = due.elapsed();
                let refused = call.await?;
                Ok(Answer {
                    latency: due.elapsed(),
                    lag,
                    refused,
                })
            });
            sent += 1;
        }
        while let Some(answer) = calls.try_join_next() {
            answer??.count(&mut tally, &mut lag);
        }
    }
    while let Some(answer) = calls.join_next().await {
        answer??.count(&mut tally, &mut lag);
    }
    Ok(Measured::new(
        format!(
            "paced at {rate:.0}/s, open loop over {} connections, start lag p99 {:.1} ms",
            cx.args.channels,
            quantile_ms(&lag, 0.99)
        ),
        unit,
        "call, from when due",
        tally,
        meter.stop(),
    ))
}

/// One paced call: latency from when it was due, and how late it started.
struct Answer {
    latency: Duration,
    lag: Duration,
    refused: usize,
}

impl Answer {
    fn count(self, tally: &mut Tally, lag: &mut Histogram<u64>) {
        record(&mut tally.latency, self.latency);
        record(lag, self.lag);
        tally.items += 1;
        tally.refused += self.refused;
    }
}
