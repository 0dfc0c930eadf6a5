//! Everything the writer stores, one transaction per request or batch:
//! [`signals`] inserts signals (with their `received` event), [`events`]
//! applies events to their signals through the state machine of
//! `audit_core::SignalState`, [`tags`] edits tags under the row lock;
//! [`statements`] holds their constant-shape SQL. [`rollups`], [`analytics`]
//! and [`maintenance`] are the writer's periodic jobs on the primary, [`status`]
//! what its gauges read.
//!
//! All writes go through one set-based path, [`apply`]: a handful of
//! multi-row statements per batch whatever its size (insert signals, claim
//! event ids, insert events, one `UPDATE … FROM unnest(…)` for the signals
//! the events touched), so a batch of 500 costs about as many round trips as
//! a batch of one. Signals touched by events are locked first, in id order
//! (`FOR NO KEY UPDATE`, which still lets other events' foreign-key checks
//! through), so concurrent batches serialise per signal, counters stay
//! exact, and two batches cannot deadlock.
//!
//! Expected per-item failures (unknown signal, an id reused with different
//! content) are found by lookups, not by failing statements, so the
//! transaction stays usable: [`record_batch`] turns any of them into a
//! rollback (all or nothing) while group commit ([`record_group`]) commits
//! the good items and fails only the bad ones. One failure is left to
//! PostgreSQL: a time on a day `signal_events` has no partition for
//! (`DbError::NoPartition`; checking every batch's days against the
//! catalog first would cost a round trip on every write for a mistake that
//! is rare). It fails the whole statement; group commit then retries its
//! items one by one, so only the bad one fails, and a batch names the item.

pub mod analytics;
mod events;
pub mod maintenance;
pub mod rollups;
mod signals;
mod statements;
pub mod status;
mod tags;

use audit_core::Lsn;
use audit_core::{NewEvent, NewSignal};
use audit_db::models::{EventRow, SignalRow};
use audit_db::replication::current_wal_lsn;
use audit_db::{DbError, PgPool};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

pub use tags::{add_tags, remove_tags};

/// A write and the WAL position that holds it.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub lsn: Lsn,
}

#[derive(Debug, Clone)]
pub struct RecordedSignal {
    pub signal: SignalRow,
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub event: EventRow,
    /// The signal after every event of the transaction was applied.
    pub signal: SignalRow,
    pub created: bool,
}

#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub signals_created: usize,
    pub events_created: usize,
    pub duplicates: usize,
}

/// Per-item results of one transaction, in input order.
#[derive(Debug, Default)]
pub struct Applied {
    pub signals: Vec<Result<RecordedSignal, DbError>>,
    pub events: Vec<Result<RecordedEvent, DbError>>,
}

impl Applied {
    /// The first failed item, named by its position (`events[3]`).
    fn first_error(&mut self) -> Option<DbError> {
        if let Some(i) = self.signals.iter().position(Result::is_err) {
            return self
                .signals
                .swap_remove(i)
                .err()
                .map(|e| e.in_item(format!("signals[{i}]")));
        }
        let i = self.events.iter().position(Result::is_err)?;
        self.events
            .swap_remove(i)
            .err()
            .map(|e| e.in_item(format!("events[{i}]")))
    }

    fn outcome(&self) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for signal in self.signals.iter().flatten() {
            if signal.created {
                outcome.signals_created += 1;
            } else {
                outcome.duplicates += 1;
            }
        }
        for event in self.events.iter().flatten() {
            if event.created {
                outcome.events_created += 1;
            } else {
                outcome.duplicates += 1;
            }
        }
        outcome
    }
}

async fn committed<T>(conn: &mut AsyncPgConnection, value: T) -> Result<Committed<T>, DbError> {
    let lsn = current_wal_lsn(conn).await?;
    Ok(Committed { value, lsn })
}

#[tracing::instrument(name = "INSERT signals", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "signals"))]
pub async fn record_signal(
    pool: &PgPool,
    signal: NewSignal,
) -> Result<Committed<RecordedSignal>, DbError> {
    let mut conn = pool.get().await?;
    let mut applied = conn
        .transaction::<_, DbError, _>(async |conn| {
            apply(conn, std::slice::from_ref(&signal), &[]).await
        })
        .await?;
    let recorded = applied.signals.pop().ok_or_else(missing_result)??;
    committed(&mut conn, recorded).await
}

#[tracing::instrument(name = "INSERT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "signal_events"))]
pub async fn record_event(
    pool: &PgPool,
    event: NewEvent,
) -> Result<Committed<RecordedEvent>, DbError> {
    let mut conn = pool.get().await?;
    let mut applied = conn
        .transaction::<_, DbError, _>(async |conn| {
            apply(conn, &[], std::slice::from_ref(&event)).await
        })
        .await?;
    let recorded = applied.events.pop().ok_or_else(missing_result)??;
    committed(&mut conn, recorded).await
}

fn missing_result() -> DbError {
    DbError::Query(diesel::result::Error::NotFound)
}

/// All signals, then all events, in one transaction: one bad item rolls
/// back the whole batch and the error names it (`events[3]`).
#[tracing::instrument(name = "INSERT signals signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "signals signal_events"))]
pub async fn record_batch(
    pool: &PgPool,
    signals: Vec<NewSignal>,
    events: Vec<NewEvent>,
) -> Result<Committed<BatchOutcome>, DbError> {
    let mut conn = pool.get().await?;
    let outcome = conn
        .transaction::<_, DbError, _>(async |conn| {
            let mut applied = apply(conn, &signals, &events).await?;
            match applied.first_error() {
                Some(error) => Err(error),
                None => Ok(applied.outcome()),
            }
        })
        .await
        .map_err(|error| unrouted_item(error, &signals, &events))?;
    committed(&mut conn, outcome).await
}

/// A batch PostgreSQL refused because a row had no partition to go to
/// names the time, not the item: the first item at that time is the one.
fn unrouted_item(error: DbError, signals: &[NewSignal], events: &[NewEvent]) -> DbError {
    let DbError::NoPartition { at } = &error else {
        return error;
    };
    // PostgreSQL keeps microseconds.
    let same = |t: &chrono::DateTime<chrono::Utc>| t.timestamp_micros() == at.timestamp_micros();
    if let Some(i) = signals.iter().position(|s| same(&s.received_at)) {
        error.in_item(format!("signals[{i}]"))
    } else if let Some(i) = events.iter().position(|e| same(&e.timestamp)) {
        error.in_item(format!("events[{i}]"))
    } else {
        error
    }
}

/// Group commit: independent callers' items in one transaction on `conn`
/// (the caller chooses the connection, so a retry can take a fresh one).
/// Items that cannot be applied fail on their own; the rest commit together.
#[tracing::instrument(name = "INSERT signals signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "signals signal_events"))]
pub async fn record_group(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
    events: &[NewEvent],
) -> Result<Committed<Applied>, DbError> {
    if events.is_empty() && !signals.is_empty() {
        return signals::record_pipelined(conn, signals).await;
    }
    let applied = conn
        .transaction::<_, DbError, _>(async |conn| apply(conn, signals, events).await)
        .await?;
    committed(conn, applied).await
}

/// Applies signals, then events, inside the caller's transaction.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
    events: &[NewEvent],
) -> Result<Applied, DbError> {
    let mut applied = Applied {
        signals: signals::insert(conn, signals).await?,
        events: Vec::new(),
    };
    if !events.is_empty() {
        applied.events = events::apply(conn, events).await?;
    }
    Ok(applied)
}

fn conflict(what: &'static str, id: Uuid, reason: String) -> DbError {
    DbError::Conflict {
        what,
        id: id.to_string(),
        reason,
    }
}
