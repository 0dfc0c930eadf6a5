//! Baseline: what one transaction per signal costs with this schema. Each
//! of N clients holds one connection and, per signal, inserts the signal
//! row, the event-id claim and the received event, then commits: three
//! INSERTs and a COMMIT (one fsync) per signal, no gRPC, no batching.

use super::{Context, Measured, Meter, Tally, Unit, join};
use crate::BenchError;
use crate::args::PhaseName;
use audit_core::rules::Limits;
use audit_core::{NewEvent, NewSignal};
use audit_core::{SignalLocation, SignalStatus};
use audit_db::DbError;
use audit_db::models::{EventIdRow, NewEventRow, SignalRow};
use audit_db::schema::{signal_event_ids, signal_events, signals};
use audit_wire::decode;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::time::Instant;
use tokio::task::JoinSet;
use uuid::Uuid;

pub async fn run(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::Naive);
    let connections = cx.connections().await?;
    let budget = cx.budget(cx.args.signals);
    let meter = Meter::start(cx.writer);
    let mut workers = JoinSet::new();
    for mut conn in connections {
        let budget = budget.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            while let Some(items) = budget.claim(1) {
                for i in items {
                    let signal = decode::new_signal(
                        &workload.signal(i),
                        &Limits::default(),
                        chrono::Utc::now(),
                    )?;
                    let (row, id, event) = received(&signal, workload.event_id(i));
                    let started = Instant::now();
                    // A deadlock or serialization failure (e.g. against the
                    // writer's partition maintenance) is retried as any
                    // client would; it is counted, and its time stays in
                    // this transaction's latency.
                    loop {
                        let attempt = conn
                            .transaction::<_, diesel::result::Error, _>(async |c| {
                                diesel::insert_into(signals::table)
                                    .values(&row)
                                    .execute(c)
                                    .await?;
                                diesel::insert_into(signal_event_ids::table)
                                    .values(&id)
                                    .execute(c)
                                    .await?;
                                diesel::insert_into(signal_events::table)
                                    .values(NewEventRow::new(&event, &row.normalised_ticker))
                                    .execute(c)
                                    .await?;
                                Ok(())
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
        format!("{} clients, 1 signal per transaction", cx.args.clients),
        Unit::Signals,
        "transaction",
        tally,
        meter.stop(),
    ))
}

/// The rows a new signal is stored as: the signal in status RECEIVED, the
/// claim of its first event's id, and that `received` event.
fn received(signal: &NewSignal, event_id: Uuid) -> (SignalRow, EventIdRow, NewEvent) {
    let row = SignalRow {
        signal_id: signal.signal_id,
        ticker: signal.ticker.clone(),
        normalised_ticker: signal.normalised_ticker.clone(),
        side: signal.side.clone(),
        action: signal.action.clone(),
        price: signal.price.clone(),
        original_signal: signal.original_signal.clone(),
        current_status: SignalStatus::Received,
        current_location: SignalLocation::ProcessingQueue,
        created_at: signal.received_at,
        updated_at: signal.received_at,
        total_processing_time: None,
        error_count: 0,
        retry_count: 0,
        tags: signal.tags.clone(),
        recorded_by: signal.recorded_by.clone(),
    };
    let id = EventIdRow {
        event_id,
        signal_id: signal.signal_id,
        ts: signal.received_at,
    };
    let event = NewEvent {
        event_id,
        signal_id: signal.signal_id,
        event_type: SignalStatus::Received,
        location: SignalLocation::ProcessingQueue,
        timestamp: signal.received_at,
        worker_id: None,
        details: None,
        error_info: None,
        http_status: None,
        response_data: None,
        recorded_by: signal.recorded_by.clone(),
    };
    (row, id, event)
}
