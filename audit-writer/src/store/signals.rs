//! New signals: each with its `received` event and that event's id claim,
//! in one statement, and the outcome of each (created, a faithful retry of a
//! stored signal, or a conflicting one).

use super::statements::InsertSignals;
use super::{Applied, Committed, RecordedSignal, conflict};
use audit_core::NewSignal;
use audit_db::DbError;
use audit_db::models::SignalRow;
use audit_db::replication::current_wal_lsn_shared;
use audit_db::schema::signals;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Namespace for the id of a signal's first (`received`) event, derived from
/// the signal id so that retried RecordSignal calls agree on it.
const RECEIVED_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_2c1e_9b0d_4c55_8f43_0c3d_5e2a_7b19);

/// Signals alone are written by one statement (see `InsertSignals`), atomic
/// on its own, so it runs in autocommit: BEGIN and COMMIT would only add
/// round trips. The consistency token query is pipelined right behind it on
/// the same connection (one round trip for both): the server runs them in
/// order, and with `synchronous_commit` the insert has committed and flushed
/// before the token is read, so the token covers it. Both futures are
/// polled in order and diesel-async sends a cached statement on its first
/// poll, so the insert always goes out first. What follows only reads rows
/// the insert committed or found.
pub(super) async fn record_pipelined(
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

/// The rows to insert: the first occurrence of an id in the batch is the
/// one inserted; later ones are retries of it.
pub(super) fn candidates(signals: &[NewSignal]) -> Vec<SignalRow> {
    let mut seen: HashSet<Uuid> = HashSet::new();
    signals
        .iter()
        .filter(|s| seen.insert(s.signal_id))
        .map(SignalRow::received)
        .collect()
}

pub(super) fn insert_statement(candidates: &[SignalRow]) -> InsertSignals<'_> {
    let received_ids = candidates
        .iter()
        .map(|c| received_event_id(c.signal_id))
        .collect();
    InsertSignals::new(candidates, received_ids)
}

/// Each signal's outcome once the insert ran: created, a faithful retry of
/// a stored signal, or a conflicting one.
pub(super) async fn signal_results(
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
            Err(DbError::not_found("signal", signal.signal_id))
        };
        results.push(result);
    }
    Ok(results)
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
fn received_event_id(signal_id: Uuid) -> Uuid {
    Uuid::new_v5(&RECEIVED_EVENT_NAMESPACE, signal_id.as_bytes())
}
