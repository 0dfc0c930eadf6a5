//! Everything the writer stores, one transaction per request or batch.
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
//! the good items and fails only the bad ones.

use crate::models::{EventIdRow, EventRow, SignalRow};
use crate::replication::{current_wal_lsn, current_wal_lsn_shared};
use crate::schema::{signal_event_ids, signal_events, signals};
use crate::statements::{InsertEventIds, InsertEvents, InsertSignals, UpdateSignals};
use crate::{DbError, PgPool};
use audit_core::validate::{NewEvent, NewSignal};
use audit_core::{SignalLocation, SignalStatus};
use chrono::TimeDelta;
use diesel::dsl::count_star;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use std::collections::{HashMap, HashSet};
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
        .await?;
    committed(&mut conn, outcome).await
}

/// Group commit: independent callers' items in one transaction. Items that
/// cannot be applied fail on their own; the rest commit together.
pub async fn record_group(
    pool: &PgPool,
    signals: &[NewSignal],
    events: &[NewEvent],
) -> Result<Committed<Applied>, DbError> {
    let mut conn = pool.get().await?;
    if events.is_empty() && !signals.is_empty() {
        return record_signals_pipelined(&mut conn, signals).await;
    }
    let applied = conn
        .transaction::<_, DbError, _>(async |conn| apply(conn, signals, events).await)
        .await?;
    committed(&mut conn, applied).await
}

/// Signals alone are written by one statement (see `InsertSignals`), atomic
/// on its own, so it runs in autocommit: BEGIN and COMMIT would only add
/// round trips. The consistency token query is pipelined right behind it on
/// the same connection (one round trip for both): the server runs them in
/// order, and with `synchronous_commit` the insert has committed and flushed
/// before the token is read, so the token covers it. Both futures are
/// polled in order and diesel-async sends a cached statement on its first
/// poll, so the insert always goes out first. What follows only reads rows
/// the insert committed or found.
async fn record_signals_pipelined(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
) -> Result<Committed<Applied>, DbError> {
    let candidates = candidates(signals);
    let statement = insert_statement(&candidates);
    let shared: &AsyncPgConnection = conn;
    let insert = async {
        let mut c = shared;
        Ok::<_, DbError>(statement.load::<SignalRow>(&mut c).await?)
    };
    let (created, lsn) = tokio::try_join!(insert, current_wal_lsn_shared(shared))?;
    let results = signal_results(conn, signals, &candidates, created).await?;
    Ok(Committed {
        value: Applied {
            signals: results,
            events: Vec::new(),
        },
        lsn,
    })
}

pub async fn add_tags(
    pool: &PgPool,
    signal_id: Uuid,
    tags: Vec<String>,
) -> Result<Committed<SignalRow>, DbError> {
    change_tags(pool, signal_id, |current| {
        for tag in tags {
            if !current.contains(&tag) {
                current.push(tag);
            }
        }
    })
    .await
}

pub async fn remove_tags(
    pool: &PgPool,
    signal_id: Uuid,
    tags: Vec<String>,
) -> Result<Committed<SignalRow>, DbError> {
    change_tags(pool, signal_id, |current| {
        current.retain(|t| !tags.contains(t))
    })
    .await
}

/// Reads the tags under the row lock, edits them, writes them back.
async fn change_tags(
    pool: &PgPool,
    signal_id: Uuid,
    edit: impl FnOnce(&mut Vec<String>) + Send,
) -> Result<Committed<SignalRow>, DbError> {
    let mut conn = pool.get().await?;
    let value = conn
        .transaction::<_, DbError, _>(async |conn| {
            let mut tags = lock_signal(conn, signal_id).await?.tags;
            edit(&mut tags);
            Ok(diesel::update(signals::table.find(signal_id))
                .set(signals::tags.eq(tags))
                .returning(SignalRow::as_returning())
                .get_result(conn)
                .await?)
        })
        .await?;
    committed(&mut conn, value).await
}

async fn lock_signal(conn: &mut AsyncPgConnection, signal_id: Uuid) -> Result<SignalRow, DbError> {
    signals::table
        .find(signal_id)
        .select(SignalRow::as_select())
        .for_no_key_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| not_found(signal_id))
}

fn not_found(signal_id: Uuid) -> DbError {
    DbError::NotFound {
        what: "signal",
        id: signal_id.to_string(),
    }
}

/// Applies signals, then events, inside the caller's transaction.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
    events: &[NewEvent],
) -> Result<Applied, DbError> {
    let mut applied = Applied {
        signals: insert_signals(conn, signals).await?,
        events: Vec::new(),
    };
    if !events.is_empty() {
        applied.events = apply_events(conn, events).await?;
    }
    Ok(applied)
}

/// The row a new signal is stored as (status RECEIVED, no events applied).
pub fn signal_row(signal: &NewSignal) -> SignalRow {
    SignalRow {
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
    }
}

/// The rows to insert: the first occurrence of an id in the batch is the
/// one inserted; later ones are retries of it.
fn candidates(signals: &[NewSignal]) -> Vec<SignalRow> {
    let mut seen: HashSet<Uuid> = HashSet::new();
    signals
        .iter()
        .filter(|s| seen.insert(s.signal_id))
        .map(signal_row)
        .collect()
}

fn insert_statement(candidates: &[SignalRow]) -> InsertSignals<'_> {
    let received_ids = candidates
        .iter()
        .map(|c| received_event_id(c.signal_id))
        .collect();
    InsertSignals::new(candidates, received_ids)
}

async fn insert_signals(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
) -> Result<Vec<Result<RecordedSignal, DbError>>, DbError> {
    if signals.is_empty() {
        return Ok(Vec::new());
    }
    let candidates = candidates(signals);
    let created = insert_statement(&candidates)
        .load::<SignalRow>(conn)
        .await?;
    signal_results(conn, signals, &candidates, created).await
}

/// Each signal's outcome once the insert ran: created, a faithful retry of
/// a stored signal, or a conflicting one.
async fn signal_results(
    conn: &mut AsyncPgConnection,
    signals: &[NewSignal],
    candidates: &[SignalRow],
    created: Vec<SignalRow>,
) -> Result<Vec<Result<RecordedSignal, DbError>>, DbError> {
    let created: HashMap<Uuid, SignalRow> = created
        .into_iter()
        .map(|row| (row.signal_id, row))
        .collect();
    let existing_ids: Vec<Uuid> = candidates
        .iter()
        .map(|c| c.signal_id)
        .filter(|id| !created.contains_key(id))
        .collect();
    let existing: HashMap<Uuid, SignalRow> = if existing_ids.is_empty() {
        HashMap::new()
    } else {
        signals::table
            .filter(signals::signal_id.eq_any(&existing_ids))
            .select(SignalRow::as_select())
            .load::<SignalRow>(conn)
            .await?
            .into_iter()
            .map(|row| (row.signal_id, row))
            .collect()
    };

    let mut results = Vec::with_capacity(signals.len());
    let mut inserted_once: HashSet<Uuid> = HashSet::new();
    for signal in signals {
        let result = if let Some(row) = created.get(&signal.signal_id) {
            let is_first = inserted_once.insert(signal.signal_id);
            match (is_first, differs(row, signal)) {
                (true, _) | (false, None) => Ok(RecordedSignal {
                    signal: row.clone(),
                    created: is_first,
                }),
                (false, Some(reason)) => Err(conflict("signal", signal.signal_id, reason)),
            }
        } else if let Some(row) = existing.get(&signal.signal_id) {
            match differs(row, signal) {
                None => Ok(RecordedSignal {
                    signal: row.clone(),
                    created: false,
                }),
                Some(reason) => Err(conflict("signal", signal.signal_id, reason)),
            }
        } else {
            // Inserted by nobody and not stored: deleted concurrently.
            Err(not_found(signal.signal_id))
        };
        results.push(result);
    }
    Ok(results)
}

fn conflict(what: &'static str, id: Uuid, reason: String) -> DbError {
    DbError::Conflict {
        what,
        id: id.to_string(),
        reason,
    }
}

/// The stored signal differs from a retried request: which field, if any.
fn differs(stored: &SignalRow, signal: &NewSignal) -> Option<String> {
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

/// The id of a signal's first event: derived from the signal id, so every
/// retry of RecordSignal agrees on it.
pub fn received_event_id(signal_id: Uuid) -> Uuid {
    Uuid::new_v5(&RECEIVED_EVENT_NAMESPACE, signal_id.as_bytes())
}

/// The idempotency claim for an event id.
pub fn id_row(event: &NewEvent) -> EventIdRow {
    EventIdRow {
        event_id: event.event_id,
        signal_id: event.signal_id,
        ts: event.timestamp,
    }
}

/// Where an event of the batch stands after the id claim.
enum Claim {
    Unknown,
    New,
    /// The same id appeared earlier in this batch, at that index.
    Repeat,
    /// Stored by an earlier transaction.
    Replay,
}

async fn apply_events(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
) -> Result<Vec<Result<RecordedEvent, DbError>>, DbError> {
    let mut signal_ids: Vec<Uuid> = events.iter().map(|e| e.signal_id).collect();
    signal_ids.sort_unstable();
    signal_ids.dedup();
    let mut states: HashMap<Uuid, SignalRow> = signals::table
        .filter(signals::signal_id.eq_any(&signal_ids))
        .order(signals::signal_id)
        .select(SignalRow::as_select())
        .for_no_key_update()
        .load::<SignalRow>(conn)
        .await?
        .into_iter()
        .map(|row| (row.signal_id, row))
        .collect();

    // Claim ids: first occurrence in the batch competes for the id.
    let mut claims = Vec::with_capacity(events.len());
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut to_claim = Vec::new();
    for event in events {
        if !states.contains_key(&event.signal_id) {
            claims.push(Claim::Unknown);
        } else if !seen.insert(event.event_id) {
            claims.push(Claim::Repeat);
        } else {
            to_claim.push(id_row(event));
            claims.push(Claim::Replay);
        }
    }
    let claimed: HashSet<Uuid> = if to_claim.is_empty() {
        HashSet::new()
    } else {
        InsertEventIds::new(&to_claim)
            .load::<ClaimedId>(conn)
            .await?
            .into_iter()
            .map(|c| c.event_id)
            .collect()
    };
    for (claim, event) in claims.iter_mut().zip(events) {
        if matches!(claim, Claim::Replay) && claimed.contains(&event.event_id) {
            *claim = Claim::New;
        }
    }

    let replays: Vec<Uuid> = claims
        .iter()
        .zip(events)
        .filter(|(c, _)| matches!(c, Claim::Replay))
        .map(|(_, e)| e.event_id)
        .collect();
    let (replay_keys, mut stored) = load_replays(conn, &replays).await?;

    // Retries: a processing or forwarding step the signal has had before.
    let mut starts: HashMap<(Uuid, SignalStatus), i64> = signal_events::table
        .filter(signal_events::signal_id.eq_any(&signal_ids))
        .filter(
            signal_events::event_type.eq_any([SignalStatus::Processing, SignalStatus::Forwarding]),
        )
        .group_by((signal_events::signal_id, signal_events::event_type))
        .select((
            signal_events::signal_id,
            signal_events::event_type,
            count_star(),
        ))
        .load::<(Uuid, SignalStatus, i64)>(conn)
        .await?
        .into_iter()
        .map(|(id, kind, n)| ((id, kind), n))
        .collect();

    let new_events: Vec<NewEvent> = claims
        .iter()
        .zip(events)
        .filter(|(c, _)| matches!(c, Claim::New))
        .map(|(_, e)| e.clone())
        .collect();
    let inserted = insert_new_events(conn, &new_events).await?;
    let mut touched: HashSet<Uuid> = HashSet::new();
    for event in &new_events {
        let Some(state) = states.get_mut(&event.signal_id) else {
            continue;
        };
        let seen = starts
            .entry((event.signal_id, event.event_type))
            .or_insert(0);
        let is_retry = event.event_type.starts_work() && *seen > 0;
        if event.event_type.starts_work() {
            *seen += 1;
        }
        fold(state, event, is_retry);
        touched.insert(event.signal_id);
    }
    let updated = update_signals(conn, touched.iter().filter_map(|id| states.get(id))).await?;
    states.extend(updated.into_iter().map(|row| (row.signal_id, row)));
    stored.extend(inserted.into_iter().map(|row| (row.event_id, row)));

    let mut results = Vec::with_capacity(events.len());
    for (claim, event) in claims.iter().zip(events) {
        let result = match claim {
            Claim::Unknown => Err(not_found(event.signal_id)),
            Claim::New => match (stored.get(&event.event_id), states.get(&event.signal_id)) {
                (Some(row), Some(signal)) => Ok(RecordedEvent {
                    event: row.clone(),
                    signal: signal.clone(),
                    created: true,
                }),
                _ => Err(missing_result()),
            },
            Claim::Repeat | Claim::Replay => {
                let owner = replay_keys.get(&event.event_id).copied();
                replayed(
                    event,
                    stored.get(&event.event_id),
                    owner,
                    states.get(&event.signal_id),
                )
            }
        };
        results.push(result);
    }
    Ok(results)
}

/// Events stored by earlier transactions, by id, and which signal owns each.
async fn load_replays(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> Result<(HashMap<Uuid, Uuid>, HashMap<Uuid, EventRow>), DbError> {
    if ids.is_empty() {
        return Ok((HashMap::new(), HashMap::new()));
    }
    let keys: Vec<EventIdRow> = signal_event_ids::table
        .filter(signal_event_ids::event_id.eq_any(ids))
        .select(EventIdRow::as_select())
        .load(conn)
        .await?;
    let owners: Vec<Uuid> = keys.iter().map(|k| k.signal_id).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = keys.iter().map(|k| k.ts).collect();
    let rows: Vec<EventRow> = signal_events::table
        .filter(signal_events::event_id.eq_any(ids))
        .filter(signal_events::signal_id.eq_any(&owners))
        .filter(signal_events::ts.eq_any(&times))
        .select(EventRow::as_select())
        .load(conn)
        .await?;
    Ok((
        keys.into_iter()
            .map(|k| (k.event_id, k.signal_id))
            .collect(),
        rows.into_iter().map(|row| (row.event_id, row)).collect(),
    ))
}

async fn insert_new_events(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
) -> Result<Vec<EventRow>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    Ok(InsertEvents::new(events).load::<EventRow>(conn).await?)
}

/// A retried event id: the stored event when the retry describes the same
/// step, ALREADY_EXISTS when it does not.
fn replayed(
    event: &NewEvent,
    stored: Option<&EventRow>,
    owner: Option<Uuid>,
    signal: Option<&SignalRow>,
) -> Result<RecordedEvent, DbError> {
    let conflict = |reason: String| conflict("event", event.event_id, reason);
    if let Some(owner) = owner.filter(|owner| *owner != event.signal_id) {
        return Err(conflict(format!("it belongs to signal {owner}")));
    }
    let (Some(stored), Some(signal)) = (stored, signal) else {
        return Err(missing_result());
    };
    if stored.signal_id != event.signal_id {
        return Err(conflict(format!(
            "it belongs to signal {}",
            stored.signal_id
        )));
    }
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
        event: stored.clone(),
        signal: signal.clone(),
        created: false,
    })
}

/// Applies one new event to its signal's state.
fn fold(state: &mut SignalRow, event: &NewEvent, is_retry: bool) {
    // The latest event by timestamp owns the current state; a late event is
    // history only. Ties go to the one recorded last.
    if event.timestamp >= state.updated_at {
        state.current_status = event.event_type;
        state.current_location = event.location;
        state.updated_at = event.timestamp;
    }
    if event.is_error() {
        state.error_count += 1;
    }
    if is_retry {
        state.retry_count += 1;
    }
    if event.event_type.is_terminal() {
        // The longest time to any terminal event: a timeout followed by a
        // successful retry counts until the success, whatever the arrival order.
        let elapsed = (event.timestamp - state.created_at).max(TimeDelta::zero());
        let longer = state
            .total_processing_time
            .as_ref()
            .is_none_or(|current| crate::interval_to_delta(current) < elapsed);
        if longer {
            state.total_processing_time = Some(PgInterval::from_microseconds(
                elapsed.num_microseconds().unwrap_or(i64::MAX),
            ));
        }
    }
}

/// One statement for every signal the batch's events changed.
async fn update_signals<'a>(
    conn: &mut AsyncPgConnection,
    states: impl Iterator<Item = &'a SignalRow>,
) -> Result<Vec<SignalRow>, DbError> {
    let mut update = UpdateSignals {
        ids: Vec::new(),
        statuses: Vec::new(),
        locations: Vec::new(),
        updated: Vec::new(),
        errors: Vec::new(),
        retries: Vec::new(),
        totals_us: Vec::new(),
    };
    for state in states {
        update.ids.push(state.signal_id);
        update.statuses.push(state.current_status.as_str());
        update.locations.push(state.current_location.as_str());
        update.updated.push(state.updated_at);
        update.errors.push(state.error_count);
        update.retries.push(state.retry_count);
        update.totals_us.push(
            state
                .total_processing_time
                .as_ref()
                .and_then(|i| crate::interval_to_delta(i).num_microseconds()),
        );
    }
    if update.ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(update.load::<SignalRow>(conn).await?)
}

/// An event id a claim took.
#[derive(QueryableByName)]
struct ClaimedId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: Uuid,
}
