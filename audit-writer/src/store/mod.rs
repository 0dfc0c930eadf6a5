//! Everything the writer stores, one transaction per request or batch:
//! [`signals`] inserts signals (with their `received` event), [`events`]
//! applies events to their signals through the state machine of
//! `audit_core::SignalState`, [`tags`] edits tags under the row lock;
//! [`statements`] holds their constant-shape SQL. [`rollups`], [`analytics`]
//! and [`maintenance`] are the writer's periodic jobs on the primary, [`status`]
//! what its gauges read.
//!
//! All writes go through one set-based path, [`write`]: a handful of
//! multi-row statements per batch whatever its size, sent in two round
//! trips. The first carries BEGIN, the signals' insert, the lock of the
//! signals the events touch (read with their state, in id order,
//! `FOR NO KEY UPDATE`, which still lets other events' foreign-key checks
//! through, so concurrent batches serialise per signal, counters stay
//! exact, and two batches cannot deadlock) and one statement that claims the
//! event ids, inserts the new events and returns the replays' stored events.
//! The state machine runs in between, here. The second carries one
//! `UPDATE … FROM unnest(…)` for the signals the events changed, COMMIT and
//! the consistency token. A batch of 500 costs the round trips of a batch of
//! one; signals alone skip even the transaction (see
//! `signals::record_pipelined`).
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
pub mod statements;
pub mod status;
mod tags;

use audit_core::Lsn;
use audit_core::{NewEvent, NewSignal};
use audit_db::models::{EventRow, SignalRow};
use audit_db::replication::current_wal_lsn_shared;
use audit_db::{DbError, PgPool};
use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use statements::UpdateSignals;
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
    let lsn = current_wal_lsn_shared(conn).await?;
    Ok(Committed { value, lsn })
}

#[tracing::instrument(name = "INSERT signals", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "signals"))]
pub async fn record_signal(
    pool: &PgPool,
    signal: NewSignal,
) -> Result<Committed<RecordedSignal>, DbError> {
    let mut conn = pool.get().await?;
    let mut committed = record_group(&mut conn, std::slice::from_ref(&signal), &[]).await?;
    let recorded = committed.value.signals.pop().ok_or_else(missing_result)??;
    Ok(Committed {
        value: recorded,
        lsn: committed.lsn,
    })
}

#[tracing::instrument(name = "INSERT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "signal_events"))]
pub async fn record_event(
    pool: &PgPool,
    event: NewEvent,
) -> Result<Committed<RecordedEvent>, DbError> {
    let mut conn = pool.get().await?;
    let mut committed = record_group(&mut conn, &[], std::slice::from_ref(&event)).await?;
    let recorded = committed.value.events.pop().ok_or_else(missing_result)??;
    Ok(Committed {
        value: recorded,
        lsn: committed.lsn,
    })
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
    let committed = write(&mut conn, &signals, &events, AllOrNothing::Yes)
        .await
        .map_err(|error| unrouted_item(error, &signals, &events))?;
    Ok(Committed {
        value: committed.value.outcome(),
        lsn: committed.lsn,
    })
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
    write(conn, signals, events, AllOrNothing::No).await
}

/// Whether one failed item rolls the whole transaction back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AllOrNothing {
    Yes,
    No,
}

/// Signals, then events, in one transaction of two round trips (see the
/// module documentation). Per-item failures are answered per item, or roll
/// everything back with `AllOrNothing::Yes`.
///
/// BEGIN and COMMIT are sent by hand, pipelined with the statements around
/// them: diesel-async's `transaction` awaits each on its own (two more round
/// trips). Its transaction manager is told, so that a connection left
/// inside a transaction by anything unforeseen (a failed ROLLBACK, a future
/// dropped half-way) counts as broken and the pool discards it instead of
/// handing out an open transaction.
async fn write(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
    events: &[NewEvent],
    all_or_nothing: AllOrNothing,
) -> Result<Committed<Applied>, DbError> {
    track_transaction(conn, TransactionDepthChange::IncreaseDepth)?;
    let (mut applied, update) = match apply(conn, signals, events).await {
        Ok(done) => done,
        Err(error) => {
            rollback(conn).await;
            return Err(error);
        }
    };
    if all_or_nothing == AllOrNothing::Yes
        && let Some(error) = applied.first_error()
    {
        rollback(conn).await;
        return Err(error);
    }
    let lsn = commit(conn, update).await?;
    Ok(Committed {
        value: applied,
        lsn,
    })
}

/// The first round trip (BEGIN, the signals' insert, the events' lock and
/// claim, pipelined on the connection in that order) and what follows from
/// it: each item's answer and the signals' new state, not yet written.
async fn apply(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
    events: &[NewEvent],
) -> Result<(Applied, Option<UpdateSignals>), DbError> {
    let candidates = signals::candidates(signals);
    let insert = signals::insert_statement(&candidates);
    let plan = events::Plan::new(events);
    let shared: &AsyncPgConnection = conn;
    // Polled in this order (biased), each future sends its statement on its
    // first poll (diesel-async prepares a statement once per connection, and
    // a statement waiting for its preparation holds the others back), so
    // the server runs them in this order.
    let (begun, created, locked, stored) = tokio::join!(
        biased;
        async {
            let mut c = shared;
            SimpleAsyncConnection::batch_execute(&mut c, "BEGIN").await
        },
        async {
            if signals.is_empty() {
                return Ok(Vec::new());
            }
            let mut c = shared;
            insert.load::<SignalRow>(&mut c).await
        },
        async {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            plan.lock(shared).await
        },
        async {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            plan.claim(shared).await
        },
    );
    // The first failure is the cause; the statements after it only failed
    // because the transaction had.
    begun?;
    let created = created?;
    let locked = locked?;
    let stored = stored?;
    let mut applied = Applied::default();
    if !signals.is_empty() {
        applied.signals = signals::signal_results(conn, signals, &candidates, created).await?;
    }
    if events.is_empty() {
        return Ok((applied, None));
    }
    let resolved = events::resolve(conn, events, &plan, locked, stored).await?;
    applied.events = resolved.results;
    Ok((applied, resolved.update))
}

/// The second round trip: the signals' new state, COMMIT, and the
/// consistency token, pipelined in that order (all three as prepared
/// statements, which diesel-async sends in the order they are polled, see
/// [`statements::Commit`]). With `synchronous_commit`
/// the COMMIT has flushed before the token is read, so the token covers it.
/// A failed UPDATE turns the COMMIT into a rollback (PostgreSQL answers
/// COMMIT of a failed transaction with ROLLBACK), and its error is the
/// answer.
async fn commit(
    conn: &mut AsyncPgConnection,
    update: Option<UpdateSignals>,
) -> Result<Lsn, DbError> {
    let shared: &AsyncPgConnection = conn;
    let (updated, committed, lsn) = tokio::join!(
        biased;
        async {
            let Some(update) = update else {
                return Ok(0);
            };
            let mut c = shared;
            update.execute(&mut c).await
        },
        async {
            let mut c = shared;
            statements::Commit.execute(&mut c).await.map(drop)
        },
        current_wal_lsn_shared(shared),
    );
    // A COMMIT that did not answer leaves the transaction's fate unknown:
    // the connection stays marked as inside it, so the pool discards it.
    if committed.is_ok() {
        track_transaction(conn, TransactionDepthChange::DecreaseDepth)?;
    }
    updated?;
    committed?;
    lsn
}

async fn rollback(conn: &mut AsyncPgConnection) {
    match conn.batch_execute("ROLLBACK").await {
        Ok(()) => {
            if let Err(error) = track_transaction(conn, TransactionDepthChange::DecreaseDepth) {
                tracing::warn!(%error, "transaction state lost after ROLLBACK");
            }
        }
        // The connection stays marked as inside a transaction: discarded.
        Err(error) => tracing::warn!(%error, "ROLLBACK failed, dropping the connection"),
    }
}

/// Records in diesel-async's transaction manager that a transaction opened
/// or closed by hand (see [`write`]). `transaction_manager_status_mut` is
/// hidden from diesel-async's documentation but public; it is what its own
/// `transaction` uses.
fn track_transaction(
    conn: &mut AsyncPgConnection,
    change: TransactionDepthChange,
) -> Result<(), DbError> {
    let status =
        <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::transaction_manager_status_mut(conn);
    match status {
        TransactionManagerStatus::Valid(valid) => {
            if matches!(change, TransactionDepthChange::IncreaseDepth)
                && valid.transaction_depth().is_some()
            {
                return Err(diesel::result::Error::AlreadyInTransaction.into());
            }
            Ok(valid.change_transaction_depth(change)?)
        }
        TransactionManagerStatus::InError => {
            Err(diesel::result::Error::BrokenTransactionManager.into())
        }
    }
}

fn conflict(what: &'static str, id: Uuid, reason: String) -> DbError {
    DbError::Conflict {
        what,
        id: id.to_string(),
        reason,
    }
}
