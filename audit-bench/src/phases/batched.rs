//! The database-side limit: N clients calling the writer's own set-based
//! `record_batch` with `--chunk-size` signals per transaction, in-process,
//! no gRPC. Whatever makes `record_batch` faster moves this limit with it.

use super::{Budget, Context, Measured, Meter, Tally, Unit, join};
use crate::BenchError;
use crate::args::PhaseName;
use crate::workload::Workload;
use audit_core::rules::Limits;
use audit_db::PgPool;
use audit_wire::decode;
use audit_writer::store;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

pub async fn run(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::Batched);
    let budget = cx.budget(cx.args.signals);
    let meter = Meter::start(cx.writer);
    let tally = write_signals(cx, workload, budget).await?;
    Ok(Measured::new(
        format!(
            "{} clients, {} signals per transaction",
            cx.args.clients, cx.args.chunk_size
        ),
        Unit::Signals,
        "transaction",
        tally,
        meter.stop(),
    ))
}

/// Writes the budget's signals with `record_batch` from `--clients` tasks;
/// also how the events phase stores the signals its events refer to.
pub async fn write_signals(
    cx: &Context<'_>,
    workload: Workload,
    budget: Arc<Budget>,
) -> Result<Tally, BenchError> {
    let mut workers = JoinSet::new();
    for _ in 0..cx.args.clients {
        workers.spawn(batches(
            cx.pool.clone(),
            workload,
            budget.clone(),
            cx.args.chunk_size,
        ));
    }
    join(workers).await
}

async fn batches(
    pool: PgPool,
    workload: Workload,
    budget: Arc<Budget>,
    chunk_size: usize,
) -> Result<Tally, BenchError> {
    let mut tally = Tally::default();
    while let Some(items) = budget.claim(chunk_size) {
        let now = chrono::Utc::now();
        let signals = items
            .map(|i| decode::new_signal(&workload.signal(i), &Limits::default(), now))
            .collect::<Result<Vec<_>, _>>()?;
        let count = signals.len();
        let started = Instant::now();
        store::record_batch(&pool, signals, Vec::new()).await?;
        tally.done(count, started);
    }
    Ok(tally)
}
