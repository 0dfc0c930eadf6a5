//! Events baseline: what one transaction per event costs with this schema,
//! written the obvious way straight on PostgreSQL. Each of N clients holds
//! one connection, takes a stored signal and sends its pipeline's events
//! (the `events` phase's mix) one transaction each: lock the signal row and
//! read it, claim the event id, insert the event, update the signal with
//! its new state (the writer's own state machine, `audit_core`), COMMIT.
//! Six round trips (BEGIN, four statements, COMMIT) and one fsync per
//! event, no gRPC, no batching.

use super::{Context, Measured, Meter, Tally, Unit, events, join};
use crate::BenchError;
use crate::args::PhaseName;
use audit_core::NewEvent;
use audit_core::SignalStatus;
use audit_core::rules::Limits;
use audit_db::DbError;
use audit_db::models::{EventIdRow, NewEventRow, interval_to_delta};
use audit_db::schema::{signal_event_ids, signal_events};
use audit_wire::decode;
use audit_writer::store::statements::{LockSignals, LockedSignal, UpdateSignals};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::task::JoinSet;

pub async fn run(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::NaiveEvents);
    let events = cx.args.signals;
    let stored = events::store_signals(cx, workload, events, cx.args.clients).await?;
    let connections = cx.connections().await?;
    let budget = cx.budget(events);
    let next_signal = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(cx.writer);
    let mut workers = JoinSet::new();
    for mut conn in connections {
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
                for wire in workload.pipeline(index, &signal_id) {
                    if budget.claim(1).is_none() {
                        break 'signals;
                    }
                    let event = decode::new_event(&wire, &Limits::default(), chrono::Utc::now())?;
                    let started = Instant::now();
                    // A deadlock or serialization failure (e.g. against the
                    // writer's partition maintenance) is retried as any
                    // client would; it is counted, and its time stays in
                    // this transaction's latency.
                    loop {
                        let attempt = conn
                            .transaction::<_, diesel::result::Error, _>(async |c| {
                                record(c, &event).await
                            })
                            .await
                            .map_err(DbError::from);
                        match attempt {
                            Ok(()) => break,
                            Err(DbError::Aborted(_)) => tally.refused += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    tally.done(1, started);
                }
            }
            Ok(tally)
        });
    }
    let tally = join(workers).await?;
    Ok(Measured::new(
        format!(
            "{} clients, 1 event per transaction, pipeline mix",
            cx.args.clients
        ),
        Unit::Events,
        "transaction",
        tally,
        meter.stop(),
    ))
}

/// One event, the obvious way, inside the caller's transaction. The lock
/// and the update are the writer's own statements with one row (diesel's
/// DSL cannot name the signals' start counters, see `audit_db::schema`);
/// prepared once per connection like every other statement here.
async fn record(c: &mut AsyncPgConnection, event: &NewEvent) -> QueryResult<()> {
    let LockedSignal {
        signal: mut row,
        processing_starts: mut processing,
        forwarding_starts: mut forwarding,
    } = LockSignals::new(&[event.signal_id])
        .get_result::<LockedSignal>(c)
        .await?;
    diesel::insert_into(signal_event_ids::table)
        .values(&EventIdRow {
            event_id: event.event_id,
            signal_id: event.signal_id,
            ts: event.timestamp,
        })
        .execute(c)
        .await?;
    diesel::insert_into(signal_events::table)
        .values(NewEventRow::new(event, &row.normalised_ticker))
        .execute(c)
        .await?;
    let earlier = match event.event_type {
        SignalStatus::Processing => {
            processing += 1;
            processing - 1
        }
        SignalStatus::Forwarding => {
            forwarding += 1;
            forwarding - 1
        }
        _ => 0,
    };
    let mut state = row.state();
    state.apply(event, i64::from(earlier));
    row.set_state(&state);
    UpdateSignals {
        ids: vec![row.signal_id],
        statuses: vec![row.current_status.as_str()],
        locations: vec![row.current_location.as_str()],
        updated: vec![row.updated_at],
        errors: vec![row.error_count],
        retries: vec![row.retry_count],
        totals_us: vec![
            row.total_processing_time
                .as_ref()
                .and_then(|i| interval_to_delta(i).num_microseconds()),
        ],
        processing_starts: vec![processing],
        forwarding_starts: vec![forwarding],
    }
    .execute(c)
    .await?;
    Ok(())
}
