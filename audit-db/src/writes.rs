//! Everything the writer stores, one transaction per request or batch.
//!
//! An event changes its signal under a row lock (`FOR NO KEY UPDATE`, which
//! still lets other events' foreign-key checks through), so concurrent events
//! for one signal serialise and the counters stay exact. Batches lock every
//! signal they touch in id order first, so two batches cannot deadlock.

use crate::models::{EventIdRow, EventRow, NewEventRow, SignalRow};
use crate::replication::current_wal_lsn;
use crate::schema::{signal_event_ids, signal_events, signals};
use crate::{DbError, PgPool};
use audit_core::validate::{NewEvent, NewSignal};
use audit_core::{SignalLocation, SignalStatus};
use chrono::TimeDelta;
use diesel::dsl::exists;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Namespace for the id of a signal's first (`received`) event, derived from
/// the signal id so that retried RecordSignal calls agree on it.
const RECEIVED_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_2c1e_9b0d_4c55_8f43_0c3d_5e2a_7b19);

/// A write and the WAL position that holds it.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub lsn: String,
}

#[derive(Debug)]
pub struct RecordedSignal {
    pub signal: SignalRow,
    pub created: bool,
}

#[derive(Debug)]
pub struct RecordedEvent {
    pub event: EventRow,
    pub signal: SignalRow,
    pub created: bool,
}

#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub signals_created: usize,
    pub events_created: usize,
    pub duplicates: usize,
}

async fn committed<T>(conn: &mut AsyncPgConnection, value: T) -> Result<Committed<T>, DbError> {
    let lsn = current_wal_lsn(conn).await?;
    Ok(Committed { value, lsn })
}

pub async fn record_signal(
    pool: &PgPool,
    signal: NewSignal,
) -> Result<Committed<RecordedSignal>, DbError> {
    let mut conn = pool.get().await?;
    let value = conn
        .transaction(async |conn| insert_signal(conn, &signal).await)
        .await?;
    committed(&mut conn, value).await
}

pub async fn record_event(
    pool: &PgPool,
    event: NewEvent,
) -> Result<Committed<RecordedEvent>, DbError> {
    let mut conn = pool.get().await?;
    let value = conn
        .transaction(async |conn| apply_event(conn, &event).await)
        .await?;
    committed(&mut conn, value).await
}

/// All signals, then all events, in one transaction: one bad item rolls
/// back the whole batch and the error names it (`events[3]`).
pub async fn record_batch(
    pool: &PgPool,
    signals: Vec<NewSignal>,
    events: Vec<NewEvent>,
) -> Result<Committed<BatchOutcome>, DbError> {
    let mut conn = pool.get().await?;
    let value = conn
        .transaction::<_, DbError, _>(async |conn| {
            let mut outcome = BatchOutcome::default();
            for (i, signal) in signals.iter().enumerate() {
                let recorded = insert_signal(conn, signal)
                    .await
                    .map_err(|e| e.in_item(format!("signals[{i}]")))?;
                if recorded.created {
                    outcome.signals_created += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            let mut ids: Vec<Uuid> = events.iter().map(|e| e.signal_id).collect();
            ids.sort_unstable();
            ids.dedup();
            signals::table
                .filter(signals::signal_id.eq_any(&ids))
                .order(signals::signal_id)
                .select(signals::signal_id)
                .for_no_key_update()
                .load::<Uuid>(conn)
                .await?;
            for (i, event) in events.iter().enumerate() {
                let recorded = apply_event(conn, event)
                    .await
                    .map_err(|e| e.in_item(format!("events[{i}]")))?;
                if recorded.created {
                    outcome.events_created += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            Ok(outcome)
        })
        .await?;
    committed(&mut conn, value).await
}

pub async fn add_tags(
    pool: &PgPool,
    signal_id: Uuid,
    tags: Vec<String>,
) -> Result<Committed<SignalRow>, DbError> {
    let mut conn = pool.get().await?;
    let value = conn
        .transaction::<_, DbError, _>(async |conn| {
            let signal = lock_signal(conn, signal_id).await?;
            let mut merged = signal.tags;
            for tag in tags {
                if !merged.contains(&tag) {
                    merged.push(tag);
                }
            }
            set_tags(conn, signal_id, merged).await
        })
        .await?;
    committed(&mut conn, value).await
}

pub async fn remove_tags(
    pool: &PgPool,
    signal_id: Uuid,
    tags: Vec<String>,
) -> Result<Committed<SignalRow>, DbError> {
    let mut conn = pool.get().await?;
    let value = conn
        .transaction::<_, DbError, _>(async |conn| {
            let signal = lock_signal(conn, signal_id).await?;
            let kept = signal
                .tags
                .into_iter()
                .filter(|t| !tags.contains(t))
                .collect();
            set_tags(conn, signal_id, kept).await
        })
        .await?;
    committed(&mut conn, value).await
}

async fn set_tags(
    conn: &mut AsyncPgConnection,
    signal_id: Uuid,
    tags: Vec<String>,
) -> Result<SignalRow, DbError> {
    Ok(diesel::update(signals::table.find(signal_id))
        .set(signals::tags.eq(tags))
        .returning(SignalRow::as_returning())
        .get_result(conn)
        .await?)
}

async fn lock_signal(conn: &mut AsyncPgConnection, signal_id: Uuid) -> Result<SignalRow, DbError> {
    signals::table
        .find(signal_id)
        .select(SignalRow::as_select())
        .for_no_key_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| DbError::NotFound {
            what: "signal",
            id: signal_id.to_string(),
        })
}

async fn insert_signal(
    conn: &mut AsyncPgConnection,
    signal: &NewSignal,
) -> Result<RecordedSignal, DbError> {
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
    };
    let inserted = diesel::insert_into(signals::table)
        .values(&row)
        .on_conflict(signals::signal_id)
        .do_nothing()
        .returning(SignalRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    let Some(inserted) = inserted else {
        let stored = signals::table
            .find(signal.signal_id)
            .select(SignalRow::as_select())
            .first(conn)
            .await?;
        return match same_signal_content(&stored, signal) {
            None => Ok(RecordedSignal {
                signal: stored,
                created: false,
            }),
            Some(reason) => Err(DbError::Conflict {
                what: "signal",
                id: signal.signal_id.to_string(),
                reason,
            }),
        };
    };
    let received = received_event(signal);
    diesel::insert_into(signal_event_ids::table)
        .values(EventIdRow {
            event_id: received.event_id,
            signal_id: received.signal_id,
            ts: received.timestamp,
        })
        .execute(conn)
        .await?;
    diesel::insert_into(signal_events::table)
        .values(NewEventRow::from(&received))
        .execute(conn)
        .await?;
    Ok(RecordedSignal {
        signal: inserted,
        created: true,
    })
}

/// The stored signal differs from a retried request: which field, if any.
fn same_signal_content(stored: &SignalRow, signal: &NewSignal) -> Option<String> {
    if stored.ticker != signal.ticker {
        Some(format!("ticker is {:?}", stored.ticker))
    } else if stored.side != signal.side {
        Some(format!("side is {:?}", stored.side))
    } else if stored.action != signal.action {
        Some(format!("action is {:?}", stored.action))
    } else if stored.price != signal.price {
        Some(format!("price is {}", stored.price))
    } else if stored.original_signal != signal.original_signal {
        Some("original_signal_json differs".into())
    } else {
        None
    }
}

fn received_event(signal: &NewSignal) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v5(&RECEIVED_EVENT_NAMESPACE, signal.signal_id.as_bytes()),
        signal_id: signal.signal_id,
        event_type: SignalStatus::Received,
        location: SignalLocation::ProcessingQueue,
        timestamp: signal.received_at,
        worker_id: None,
        details: None,
        error_info: None,
        http_status: None,
        response_data: None,
    }
}

async fn apply_event(
    conn: &mut AsyncPgConnection,
    event: &NewEvent,
) -> Result<RecordedEvent, DbError> {
    let signal = lock_signal(conn, event.signal_id).await?;
    let claimed = diesel::insert_into(signal_event_ids::table)
        .values(EventIdRow {
            event_id: event.event_id,
            signal_id: event.signal_id,
            ts: event.timestamp,
        })
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if claimed == 0 {
        return replayed_event(conn, event, signal).await;
    }

    let is_retry = event.event_type.starts_work()
        && diesel::select(exists(
            signal_events::table
                .filter(signal_events::signal_id.eq(event.signal_id))
                .filter(signal_events::event_type.eq(event.event_type)),
        ))
        .get_result::<bool>(conn)
        .await?;
    let stored = diesel::insert_into(signal_events::table)
        .values(NewEventRow::from(event))
        .returning(EventRow::as_returning())
        .get_result(conn)
        .await?;

    let mut next = signal;
    // The latest event by timestamp owns the current state; a late event is
    // history only. Ties go to the one recorded last.
    if event.timestamp >= next.updated_at {
        next.current_status = event.event_type;
        next.current_location = event.location;
        next.updated_at = event.timestamp;
    }
    if event.is_error() {
        next.error_count += 1;
    }
    if is_retry {
        next.retry_count += 1;
    }
    if event.event_type.is_terminal() {
        // The longest time to any terminal event: a timeout followed by a
        // successful retry counts until the success, whatever the arrival order.
        let elapsed = (event.timestamp - next.created_at).max(TimeDelta::zero());
        let micros = elapsed.num_microseconds().unwrap_or(i64::MAX);
        let longer = next
            .total_processing_time
            .as_ref()
            .is_none_or(|current| crate::interval_to_delta(current) < elapsed);
        if longer {
            next.total_processing_time = Some(PgInterval::from_microseconds(micros));
        }
    }
    let signal = diesel::update(signals::table.find(event.signal_id))
        .set((
            signals::current_status.eq(next.current_status),
            signals::current_location.eq(next.current_location),
            signals::updated_at.eq(next.updated_at),
            signals::error_count.eq(next.error_count),
            signals::retry_count.eq(next.retry_count),
            signals::total_processing_time.eq(next.total_processing_time),
        ))
        .returning(SignalRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(RecordedEvent {
        event: stored,
        signal,
        created: true,
    })
}

/// The event id was recorded before: answer with what is stored when the
/// retry describes the same step, refuse when it does not.
async fn replayed_event(
    conn: &mut AsyncPgConnection,
    event: &NewEvent,
    signal: SignalRow,
) -> Result<RecordedEvent, DbError> {
    let key: EventIdRow = signal_event_ids::table
        .find(event.event_id)
        .select(EventIdRow::as_select())
        .first(conn)
        .await?;
    let conflict = |reason: String| DbError::Conflict {
        what: "event",
        id: event.event_id.to_string(),
        reason,
    };
    if key.signal_id != event.signal_id {
        return Err(conflict(format!("it belongs to signal {}", key.signal_id)));
    }
    let stored: EventRow = signal_events::table
        .filter(signal_events::signal_id.eq(key.signal_id))
        .filter(signal_events::ts.eq(key.ts))
        .filter(signal_events::event_id.eq(key.event_id))
        .select(EventRow::as_select())
        .first(conn)
        .await?;
    if stored.event_type != event.event_type {
        return Err(conflict(format!(
            "its event_type is {}",
            stored.event_type.as_str()
        )));
    }
    if stored.location != event.location {
        return Err(conflict(format!(
            "its location is {}",
            stored.location.as_str()
        )));
    }
    Ok(RecordedEvent {
        event: stored,
        signal,
        created: false,
    })
}
