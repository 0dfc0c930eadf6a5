//! Events: claim each id (idempotency), insert the new ones, and fold them
//! into their signals' state.
//!
//! Two statements read and write everything a batch of events needs, and
//! both ride in its transaction's first round trip (see `store::write`):
//! [`Plan::lock`] locks the signals and reads them with their start
//! counters; [`Plan::claim`] claims the ids, inserts the events whose claim
//! it took and returns them together with the stored events of ids claimed
//! before (replays). [`resolve`] then applies the new events through the
//! state machine of `audit_core::SignalState` and answers each event; the
//! signals' new state is one `UPDATE … FROM unnest(…)` that rides with the
//! COMMIT. Lookups beyond that only happen for races (see [`resolve`]).

use super::statements::{ClaimEvents, LockSignals, LockedSignal, UpdateSignals};
use super::{RecordedEvent, conflict, missing_result};
use audit_core::{NewEvent, SignalStatus};
use audit_db::DbError;
use audit_db::models::{EventIdRow, EventRow, SignalRow, interval_to_delta};
use audit_db::schema::{signal_event_ids, signal_events};
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// What a stored event came back as from [`ClaimEvents`].
#[derive(QueryableByName)]
pub(super) struct Stored {
    /// Inserted by this statement, rather than claimed before it.
    #[diesel(sql_type = Bool)]
    created: bool,
    #[diesel(embed)]
    event: EventRow,
}

/// A batch of events, ready to be sent.
pub(super) struct Plan<'a> {
    /// The signals the events name, in id order (the lock order: two
    /// transactions lock their common signals in the same order, so they
    /// cannot deadlock).
    signal_ids: Vec<Uuid>,
    /// The first occurrence of each event id with each signal: the ones
    /// that compete for the id (an occurrence with an unknown signal cannot
    /// take it from a later one with a known signal).
    firsts: Vec<&'a NewEvent>,
}

impl<'a> Plan<'a> {
    pub(super) fn new(events: &'a [NewEvent]) -> Self {
        let mut signal_ids: Vec<Uuid> = events.iter().map(|e| e.signal_id).collect();
        signal_ids.sort_unstable();
        signal_ids.dedup();
        let mut seen: HashSet<(Uuid, Uuid)> = HashSet::with_capacity(events.len());
        let firsts = events
            .iter()
            .filter(|e| seen.insert((e.event_id, e.signal_id)))
            .collect();
        Self { signal_ids, firsts }
    }

    /// Locks the signals (`FOR NO KEY UPDATE`: other transactions' foreign
    /// key checks still pass) and reads them.
    pub(super) async fn lock(
        &self,
        conn: &AsyncPgConnection,
    ) -> Result<Vec<LockedSignal>, DbError> {
        lock_signals(conn, &self.signal_ids).await
    }

    /// Claims, inserts and looks up the events (one statement).
    pub(super) async fn claim(&self, conn: &AsyncPgConnection) -> Result<Vec<Stored>, DbError> {
        let mut shared = conn;
        Ok(ClaimEvents::new(&self.firsts)
            .load::<Stored>(&mut shared)
            .await?)
    }
}

async fn lock_signals(
    conn: &AsyncPgConnection,
    ids: &[Uuid],
) -> Result<Vec<LockedSignal>, DbError> {
    let mut shared = conn;
    Ok(LockSignals::new(ids)
        .load::<LockedSignal>(&mut shared)
        .await?)
}

/// A signal while the batch's events are applied to it.
struct State {
    row: SignalRow,
    processing_starts: i32,
    forwarding_starts: i32,
}

impl From<LockedSignal> for State {
    fn from(locked: LockedSignal) -> Self {
        Self {
            row: locked.signal,
            processing_starts: locked.processing_starts,
            forwarding_starts: locked.forwarding_starts,
        }
    }
}

impl State {
    /// How many events of this type the signal already has, for the types
    /// whose repetition is a retry.
    fn starts(&mut self, kind: SignalStatus) -> Option<&mut i32> {
        match kind {
            SignalStatus::Processing => Some(&mut self.processing_starts),
            SignalStatus::Forwarding => Some(&mut self.forwarding_starts),
            _ => None,
        }
    }
}

/// Where an event of the batch stands after the id claim.
enum Claim {
    Unknown,
    New,
    /// The new event again, later in this batch.
    Repeat,
    /// Claimed by an earlier transaction, or in this batch for another
    /// signal: the stored event answers it (or the conflict does).
    Replay,
}

/// Each event's answer, in input order, and the signals' new state (none
/// when no event was new).
pub(super) struct Resolved {
    pub results: Vec<Result<RecordedEvent, DbError>>,
    pub update: Option<UpdateSignals>,
}

/// Applies the batch's new events to their signals and answers every
/// event, from what [`Plan::lock`] and [`Plan::claim`] returned.
///
/// Two races need a lookup of their own, inside the same transaction (so
/// under the same locks): a signal inserted and committed between the lock
/// and the claim (its events were claimed, so it is locked and read now),
/// and an id claimed by a transaction that committed after the claim
/// statement's snapshot (its stored event is read now, see [`ClaimEvents`]).
pub(super) async fn resolve(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
    plan: &Plan<'_>,
    locked: Vec<LockedSignal>,
    stored: Vec<Stored>,
) -> Result<Resolved, DbError> {
    let mut states: HashMap<Uuid, State> = locked
        .into_iter()
        .map(|locked| (locked.signal.signal_id, State::from(locked)))
        .collect();
    let mut created: HashSet<Uuid> = HashSet::new();
    let mut rows: HashMap<Uuid, EventRow> = HashMap::with_capacity(stored.len());
    // Which signal owns each id claimed before this transaction.
    let mut owners: HashMap<Uuid, Uuid> = HashMap::new();
    for Stored {
        created: new,
        event,
    } in stored
    {
        if new {
            created.insert(event.event_id);
        } else {
            owners.insert(event.event_id, event.signal_id);
        }
        rows.insert(event.event_id, event);
    }

    let mut late_signals: Vec<Uuid> = plan
        .firsts
        .iter()
        .filter(|e| claimed_here(e, &created, &rows) && !states.contains_key(&e.signal_id))
        .map(|e| e.signal_id)
        .collect();
    if !late_signals.is_empty() {
        late_signals.sort_unstable();
        late_signals.dedup();
        for locked in lock_signals(conn, &late_signals).await? {
            states.insert(locked.signal.signal_id, State::from(locked));
        }
    }
    let unseen: Vec<Uuid> = plan
        .firsts
        .iter()
        .filter(|e| states.contains_key(&e.signal_id) && !rows.contains_key(&e.event_id))
        .map(|e| e.event_id)
        .collect();
    if !unseen.is_empty() {
        let (keys, found) = load_replays(conn, &unseen).await?;
        owners.extend(keys);
        rows.extend(found);
    }

    // New is decided by what the claim stored, not by input order: the
    // occurrence whose (id, signal) the claim took, the first time it
    // appears; every other occurrence is answered from the stored event.
    let mut claims = Vec::with_capacity(events.len());
    let mut applied: HashSet<Uuid> = HashSet::with_capacity(created.len());
    for event in events {
        claims.push(if !states.contains_key(&event.signal_id) {
            Claim::Unknown
        } else if claimed_here(event, &created, &rows) {
            if applied.insert(event.event_id) {
                Claim::New
            } else {
                Claim::Repeat
            }
        } else {
            Claim::Replay
        });
    }

    // The new events, in input order, through the state machine.
    let mut touched: Vec<Uuid> = Vec::new();
    for (claim, event) in claims.iter().zip(events) {
        if !matches!(claim, Claim::New) {
            continue;
        }
        let Some(state) = states.get_mut(&event.signal_id) else {
            continue;
        };
        let earlier = match state.starts(event.event_type) {
            Some(starts) => {
                let earlier = *starts;
                *starts += 1;
                i64::from(earlier)
            }
            None => 0,
        };
        let mut next = state.row.state();
        next.apply(event, earlier);
        state.row.set_state(&next);
        touched.push(event.signal_id);
    }
    touched.sort_unstable();
    touched.dedup();
    let update =
        (!touched.is_empty()).then(|| update_signals(touched.iter().map(|id| &states[id])));

    let results = claims
        .iter()
        .zip(events)
        .map(|(claim, event)| {
            let signal = states.get(&event.signal_id).map(|s| &s.row);
            match claim {
                Claim::Unknown => Err(DbError::not_found("signal", event.signal_id)),
                Claim::New => match (rows.get(&event.event_id), signal) {
                    (Some(row), Some(signal)) => Ok(RecordedEvent {
                        event: row.clone(),
                        signal: signal.clone(),
                        created: true,
                    }),
                    _ => Err(missing_result()),
                },
                Claim::Repeat | Claim::Replay => replayed(
                    event,
                    rows.get(&event.event_id),
                    owners.get(&event.event_id).copied(),
                    signal,
                ),
            }
        })
        .collect();
    Ok(Resolved { results, update })
}

/// Whether the claim statement took `event`'s id for its signal (`created`:
/// the ids it inserted; `rows`: their events).
fn claimed_here(event: &NewEvent, created: &HashSet<Uuid>, rows: &HashMap<Uuid, EventRow>) -> bool {
    created.contains(&event.event_id)
        && rows.get(&event.event_id).map(|r| r.signal_id) == Some(event.signal_id)
}

/// Events stored by earlier transactions, by id, and which signal owns each.
async fn load_replays(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> Result<(HashMap<Uuid, Uuid>, HashMap<Uuid, EventRow>), DbError> {
    let keys: Vec<EventIdRow> = signal_event_ids::table
        .filter(signal_event_ids::event_id.eq_any(ids))
        .select(EventIdRow::as_select())
        .load(conn)
        .await?;
    if keys.is_empty() {
        return Ok((HashMap::new(), HashMap::new()));
    }
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

/// One statement for every signal the batch's events changed.
fn update_signals<'a>(states: impl Iterator<Item = &'a State>) -> UpdateSignals {
    let mut update = UpdateSignals::default();
    for state in states {
        let row = &state.row;
        update.ids.push(row.signal_id);
        update.statuses.push(row.current_status.as_str());
        update.locations.push(row.current_location.as_str());
        update.updated.push(row.updated_at);
        update.errors.push(row.error_count);
        update.retries.push(row.retry_count);
        update.totals_us.push(
            row.total_processing_time
                .as_ref()
                .and_then(|i| interval_to_delta(i).num_microseconds()),
        );
        update.processing_starts.push(state.processing_starts);
        update.forwarding_starts.push(state.forwarding_starts);
    }
    update
}
