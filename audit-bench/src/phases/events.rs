//! RecordEvent for existing signals, as workers of a forwarding pipeline
//! send them: per signal, in order, processing → approved → forwarding →
//! forwarded_success (most), or a rejection, an HTTP error, or a timeout
//! followed by a successful retry; every event with a client event_id.
//!
//! The signals are stored first with `record_batch` (outside the clock);
//! then `--unary-concurrency` callers each take a signal and send its
//! events one call at a time until `--signals` events are answered.

use super::{Context, Measured, Meter, Tally, Unit, batched, join, record_event};
use crate::BenchError;
use crate::args::PhaseName;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::task::JoinSet;

pub async fn run(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::Events);
    let events = cx.args.signals;
    // Every pipeline has at least two events, and each caller may hold one
    // signal it has only started when the budget runs out.
    let signals = events.div_ceil(2) + cx.args.unary_concurrency;
    let stored = batched::write_signals(cx, workload, cx.budget(signals)).await?;
    let stored = stored.items;

    let clients = cx.clients().await?;
    let budget = cx.budget(events);
    let next_signal = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(cx.writer);
    let mut workers = JoinSet::new();
    for caller in 0..cx.args.unary_concurrency {
        let client = clients[caller % clients.len()].clone();
        let budget = budget.clone();
        let next_signal = next_signal.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            'signals: loop {
                let index = next_signal.fetch_add(1, Ordering::Relaxed);
                if index >= stored {
                    break;
                }
                let signal_id = workload.signal(index).signal_id;
                for event in workload.pipeline(index, &signal_id) {
                    if budget.claim(1).is_none() {
                        break 'signals;
                    }
                    let started = Instant::now();
                    tally.refused += record_event(&client, event).await?;
                    tally.done(1, started);
                }
            }
            Ok(tally)
        });
    }
    let tally = join(workers).await?;
    Ok(Measured::new(
        format!(
            "{} callers over {} connections, pipeline mix",
            cx.args.unary_concurrency, cx.args.channels
        ),
        Unit::Events,
        "call",
        tally,
        meter.stop(),
    ))
}
