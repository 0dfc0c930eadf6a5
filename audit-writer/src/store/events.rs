//! Events: claim each id (idempotency), insert the new ones, and fold them
//! into their signals' state, one set-based statement per step.

use super::statements::{InsertEventIds, InsertEvents, UpdateSignals};
use super::{RecordedEvent, conflict, missing_result};
use audit_core::{NewEvent, SignalStatus};
use audit_db::DbError;
use audit_db::models::{EventIdRow, EventRow, SignalRow, interval_to_delta};
use audit_db::schema::{signal_event_ids, signal_events, signals};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// The idempotency claim for an event id.
fn id_row(event: &NewEvent) -> EventIdRow {
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
    /// Claimed by an earlier transaction (or, until the claim's answer is
    /// in, maybe by this one): the stored event answers it.
    Pending,
}

pub(super) async fn apply(
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
            claims.push(Claim::Pending);
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
        if matches!(claim, Claim::Pending) && claimed.contains(&event.event_id) {
            *claim = Claim::New;
        }
    }

    let replays: Vec<Uuid> = claims
        .iter()
        .zip(events)
        .filter(|(c, _)| matches!(c, Claim::Pending))
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
        let earlier = *seen;
        if event.event_type.starts_work() {
            *seen += 1;
        }
        let mut next = state.state();
        next.apply(event, earlier);
        state.set_state(&next);
        touched.insert(event.signal_id);
    }
    let updated = update_signals(conn, touched.iter().filter_map(|id| states.get(id))).await?;
    states.extend(updated.into_iter().map(|row| (row.signal_id, row)));
    stored.extend(inserted.into_iter().map(|row| (row.event_id, row)));

    let mut results = Vec::with_capacity(events.len());
    for (claim, event) in claims.iter().zip(events) {
        let result = match claim {
            Claim::Unknown => Err(DbError::not_found("signal", event.signal_id)),
            Claim::New => match (stored.get(&event.event_id), states.get(&event.signal_id)) {
                (Some(row), Some(signal)) => Ok(RecordedEvent {
                    event: row.clone(),
                    signal: signal.clone(),
                    created: true,
                }),
                _ => Err(missing_result()),
            },
            Claim::Repeat | Claim::Pending => {
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
                .and_then(|i| interval_to_delta(i).num_microseconds()),
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
