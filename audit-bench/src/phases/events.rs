//! RecordEvent for existing signals, as workers of a forwarding pipeline
//! send them: per signal, in order, processing → approved → forwarding →
//! forwarded_success (most), or a rejection, an HTTP error, or a timeout
//! followed by a successful retry; every event with a client event_id.
//!
//! Every event phase stores its signals first with `record_batch`, outside
//! the clock ([`store_signals`]). [`run`] (`events`): `--unary-concurrency`
//! callers each take a signal and send its events one call at a time until
//! `--signals` events are answered. [`paced`] (`events-half`): calls on a
//! fixed schedule (see `unary::paced`), the events of many signals
//! interleaved ([`EventFeed`]). [`batched`] (`batched-events`): the writer's
//! `record_batch` in-process with `--chunk-size` events per transaction, one
//! event per signal per chunk, from `--clients` tasks: the limit of the
//! event path without gRPC.

use super::{
    Budget, Context, Measured, Meter, Tally, Unit, WriterClient, batched, join, record_event, unary,
};
use crate::BenchError;
use crate::args::PhaseName;
use crate::workload::{EventFeed, Workload};
use audit_core::rules::Limits;
use audit_db::PgPool;
use audit_wire::decode;
use audit_writer::store;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::task::JoinSet;

/// Stores the signals `events` events of `workload` will need, when up to
/// `started` signals can be started and left unfinished at the end (every
/// pipeline has at least two events). Returns how many were stored.
pub async fn store_signals(
    cx: &Context<'_>,
    workload: Workload,
    events: usize,
    started: usize,
) -> Result<usize, BenchError> {
    let signals = events.div_ceil(2) + started;
    Ok(batched::write_signals(cx, workload, cx.budget(signals))
        .await?
        .items)
}

pub async fn run(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::Events);
    let events = cx.args.signals;
    let stored = store_signals(cx, workload, events, cx.args.unary_concurrency).await?;

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

/// Signals whose pipelines the paced phase interleaves: the events of one
/// signal are this many calls apart, far longer than a call takes at any
/// rate this bench reaches, so each event finds its predecessor stored.
const PACED_ACTIVE_SIGNALS: usize = 2_000;

pub async fn paced(cx: &Context<'_>, rate: f64) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::EventsHalf);
    let events = cx.args.signals;
    let stored = store_signals(cx, workload, events, PACED_ACTIVE_SIGNALS).await?;
    let budget = cx.budget(events);
    let mut feed = EventFeed::new(
        workload,
        Arc::new(AtomicUsize::new(0)),
        stored,
        PACED_ACTIVE_SIGNALS,
    );
    unary::paced(cx, rate, Unit::Events, move |client: &WriterClient| {
        let event = feed.next(1, &budget).pop()?;
        let client = client.clone();
        let call: unary::Call = Box::pin(async move { record_event(&client, event).await });
        Some(call)
    })
    .await
}

pub async fn batched(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::BatchedEvents);
    let events = cx.args.signals;
    let chunk = cx.args.chunk_size;
    let stored = store_signals(cx, workload, events, cx.args.clients * chunk).await?;
    let budget = cx.budget(events);
    let next_signal = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(cx.writer);
    let mut workers = JoinSet::new();
    for _ in 0..cx.args.clients {
        let feed = EventFeed::new(workload, next_signal.clone(), stored, chunk);
        workers.spawn(batches(cx.pool.clone(), feed, budget.clone(), chunk));
    }
    let tally = join(workers).await?;
    Ok(Measured::new(
        format!(
            "{} clients, {chunk} events per transaction, one per signal",
            cx.args.clients
        ),
        Unit::Events,
        "transaction",
        tally,
        meter.stop(),
    ))
}

async fn batches(
    pool: PgPool,
    mut feed: EventFeed,
    budget: Arc<Budget>,
    chunk: usize,
) -> Result<Tally, BenchError> {
    let mut tally = Tally::default();
    loop {
        let wire = feed.next(chunk, &budget);
        if wire.is_empty() {
            return Ok(tally);
        }
        let now = chrono::Utc::now();
        let events = wire
            .iter()
            .map(|e| decode::new_event(e, &Limits::default(), now))
            .collect::<Result<Vec<_>, _>>()?;
        let count = events.len();
        let started = Instant::now();
        store::record_batch(&pool, Vec::new(), events).await?;
        tally.done(count, started);
    }
}
