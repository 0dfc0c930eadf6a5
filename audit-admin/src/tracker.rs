//! The old in-memory tracker's snapshot format, version 1: JSON lines, one
//! signal per line with all its events, as the tracker held them.
//!
//! ```json
//! {"format_version":1,"signal_id":"…uuid…","ticker":"NASDAQ:AAPL","side":"buy","action":"open",
//!  "price":"187.25","original_signal":{"raw":"buy AAPL"},"created_at":"2026-09-01T09:00:00Z",
//!  "status":"forwarded_success","location":"completed","updated_at":"2026-09-01T09:00:00.6Z",
//!  "error_count":0,"retry_count":0,"total_processing_time_us":600000,"tags":["a"],
//!  "events":[{"event_id":"…uuid…","timestamp":"2026-09-01T09:00:00Z","event_type":"received",
//!             "location":"processing_queue","worker_id":null,"details":null,"error_info":null,
//!             "http_status":null,"response_data":null}, …]}
//! ```
//!
//! - `price` is a JSON number or a decimal string (export writes a string,
//!   so no digit is lost); timestamps are RFC 3339.
//! - `status`, `location`, `updated_at`, the counters and
//!   `total_processing_time_us` are the tracker's derived state: `import`
//!   ignores them (the write path derives them from the events, as for any
//!   Ingest), `verify` compares them. All but `status`/`location` may be
//!   omitted.
//! - `events[].event_id` is optional: without one, import derives a stable
//!   id from the signal id and the event's position, so importing twice
//!   stores nothing twice. The signal's first `received` event is the one
//!   the write path records for every new signal (at `created_at`, id
//!   derived from the signal id); a `received` event in the file stands for
//!   it rather than being stored a second time.
//! - Unknown fields are refused, so a typo cannot silently drop data; a
//!   later format bumps `format_version`.

use crate::error::AdminError;
use audit_core::rules::{self, Limits};
use audit_core::{NewEvent, NewSignal, SignalLocation, SignalStatus};
use audit_db::models::{EventRow, SignalRow};
use bigdecimal::BigDecimal;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::str::FromStr;
use uuid::Uuid;

/// The caller an imported signal or event is recorded by: the import itself,
/// so the audit trail tells migrated history from live traffic.
const IMPORTED_BY: &str = "audit-admin import";

pub const FORMAT_VERSION: u32 = 1;

/// Namespace of the ids import gives events that have none in the file.
const IMPORT_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x2b0c_51a4_77d2_4e0f_9a61_d3f4_0b6e_8c25);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackedSignal {
    pub format_version: u32,
    pub signal_id: Uuid,
    pub ticker: String,
    pub side: String,
    pub action: String,
    pub price: serde_json::Value,
    pub original_signal: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_processing_time_us: Option<i64>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub events: Vec<TrackedEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackedEvent {
    #[serde(default)]
    pub event_id: Option<Uuid>,
    pub timestamp: DateTime<Utc>,
    pub event_type: String,
    pub location: String,
    #[serde(default)]
    pub worker_id: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub error_info: Option<serde_json::Value>,
    #[serde(default)]
    pub http_status: Option<i32>,
    #[serde(default)]
    pub response_data: Option<String>,
}

/// One line of a file: its number (from 1) and the signal on it.
pub struct Line {
    pub number: usize,
    pub signal: TrackedSignal,
}

/// A signal of a line, checked by the writer's own rules.
pub struct Checked {
    pub signal: NewSignal,
    pub events: Vec<NewEvent>,
}

fn at_line(path: &str, number: usize, reason: impl std::fmt::Display) -> AdminError {
    AdminError::invalid(format!("{path}:{number}"), reason.to_string())
}

/// Reads and checks every line of `path` before anything is written: a
/// truncated or malformed line is an error naming its line number.
pub fn read_file(path: &std::path::Path) -> Result<Vec<(Line, Checked)>, AdminError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| AdminError::invalid(name.clone(), format!("cannot open: {e}")))?;
    let limits = Limits::default();
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = i + 1;
        let text = line.map_err(|e| at_line(&name, number, e))?;
        if text.trim().is_empty() {
            continue;
        }
        let mut signal: TrackedSignal = serde_json::from_str(&text)
            .map_err(|e| at_line(&name, number, format!("not a tracker record: {e}")))?;
        to_microseconds(&mut signal);
        if signal.format_version != FORMAT_VERSION {
            return Err(at_line(
                &name,
                number,
                format!(
                    "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                    signal.format_version
                ),
            ));
        }
        let checked = check(&signal, &limits).map_err(|e| at_line(&name, number, e))?;
        out.push((Line { number, signal }, checked));
    }
    Ok(out)
}

/// PostgreSQL keeps microseconds: finer digits in a file are dropped on
/// the way in, so they are dropped before anything is compared too.
fn to_microseconds(signal: &mut TrackedSignal) {
    signal.created_at = signal.created_at.trunc_subsecs(6);
    signal.updated_at = signal.updated_at.map(|t| t.trunc_subsecs(6));
    for event in &mut signal.events {
        event.timestamp = event.timestamp.trunc_subsecs(6);
    }
}

pub fn price(value: &serde_json::Value) -> Option<BigDecimal> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    BigDecimal::from_str(&text).ok()
}

/// The event id import stores for `events[index]` of `signal`.
pub fn event_id(signal: &TrackedSignal, index: usize) -> Uuid {
    signal.events[index].event_id.unwrap_or_else(|| {
        Uuid::new_v5(
            &IMPORT_EVENT_NAMESPACE,
            format!("{}/{index}", signal.signal_id).as_bytes(),
        )
    })
}

/// The index of the event that stands for the signal's own `received`
/// event: the earliest `received` one.
pub fn received_index(signal: &TrackedSignal) -> Option<usize> {
    signal
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event_type == "received")
        .min_by_key(|(_, e)| e.timestamp)
        .map(|(i, _)| i)
}

fn check(signal: &TrackedSignal, limits: &Limits) -> Result<Checked, audit_core::DomainError> {
    let now = Utc::now();
    let (ticker, normalised_ticker) = rules::ticker("ticker", &signal.ticker)?;
    let price = price(&signal.price)
        .filter(|p| p.sign() == bigdecimal::num_bigint::Sign::Plus)
        .ok_or_else(|| {
            audit_core::DomainError::invalid("price", "must be a decimal number above 0")
        })?;
    let original = rules::json(
        "original_signal",
        &signal.original_signal.to_string(),
        limits,
    )?
    .unwrap_or(serde_json::Value::Null);
    SignalStatus::from_name("status", &signal.status)?;
    SignalLocation::from_name("location", &signal.location)?;
    let received = received_index(signal);
    let new_signal = NewSignal {
        signal_id: signal.signal_id,
        ticker,
        normalised_ticker,
        side: rules::short_text("side", &signal.side)?,
        action: rules::short_text("action", &signal.action)?,
        price,
        original_signal: original,
        tags: rules::tags("tags", &signal.tags, limits)?,
        received_at: rules::not_in_future(
            "created_at",
            received.map_or(signal.created_at, |i| signal.events[i].timestamp),
            limits,
            now,
        )?,
        recorded_by: Some(IMPORTED_BY.to_owned()),
    };
    let mut events = Vec::new();
    for (i, e) in signal.events.iter().enumerate() {
        let field = |f: &str| format!("events[{i}].{f}");
        let event = NewEvent {
            recorded_by: Some(IMPORTED_BY.to_owned()),
            event_id: event_id(signal, i),
            signal_id: signal.signal_id,
            event_type: SignalStatus::from_name(&field("event_type"), &e.event_type)?,
            location: SignalLocation::from_name(&field("location"), &e.location)?,
            timestamp: rules::not_in_future(&field("timestamp"), e.timestamp, limits, now)?,
            worker_id: match &e.worker_id {
                Some(w) => Some(rules::short_text(&field("worker_id"), w)?),
                None => None,
            },
            details: match &e.details {
                Some(d) => rules::optional_text(&field("details"), d, limits.max_payload_bytes)?,
                None => None,
            },
            error_info: match &e.error_info {
                Some(v) if !v.is_null() => {
                    rules::json(&field("error_info"), &v.to_string(), limits)?
                }
                _ => None,
            },
            http_status: rules::http_status(&field("http_status"), e.http_status.unwrap_or(0))?,
            response_data: match &e.response_data {
                Some(d) => {
                    rules::optional_text(&field("response_data"), d, limits.max_payload_bytes)?
                }
                None => None,
            },
        };
        if Some(i) != received {
            events.push(event);
        }
    }
    Ok(Checked {
        signal: new_signal,
        events,
    })
}

fn interval_us(interval: &diesel::pg::data_types::PgInterval) -> i64 {
    // Intervals stored here are differences of timestamps: days and
    // microseconds, never months.
    i64::from(interval.months) * 30 * 86_400_000_000
        + i64::from(interval.days) * 86_400_000_000
        + interval.microseconds
}

/// The tracker record of a stored signal and its events (ordered by time).
pub fn from_rows(signal: &SignalRow, events: &[EventRow]) -> TrackedSignal {
    TrackedSignal {
        format_version: FORMAT_VERSION,
        signal_id: signal.signal_id,
        ticker: signal.ticker.clone(),
        side: signal.side.clone(),
        action: signal.action.clone(),
        price: serde_json::Value::String(signal.price.normalized().to_string()),
        original_signal: signal.original_signal.clone(),
        created_at: signal.created_at,
        status: signal.current_status.as_str().to_owned(),
        location: signal.current_location.as_str().to_owned(),
        updated_at: Some(signal.updated_at),
        error_count: Some(signal.error_count),
        retry_count: Some(signal.retry_count),
        total_processing_time_us: signal.total_processing_time.as_ref().map(interval_us),
        tags: signal.tags.clone(),
        events: events
            .iter()
            .map(|e| TrackedEvent {
                event_id: Some(e.event_id),
                timestamp: e.ts,
                event_type: e.event_type.as_str().to_owned(),
                location: e.location.as_str().to_owned(),
                worker_id: e.worker_id.clone(),
                details: e.details.clone(),
                error_info: e.error_info.clone(),
                http_status: e.http_status,
                response_data: e.response_data.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> String {
        r#"{"format_version":1,"signal_id":"6f1b3c1e-3c1a-4f7a-9a61-0b6e8c25d3f4","ticker":"NASDAQ:AAPL",
            "side":"buy","action":"open","price":187.25,"original_signal":{"raw":"x"},
            "created_at":"2026-09-01T09:00:00Z","status":"approved","location":"approved_queue",
            "events":[{"timestamp":"2026-09-01T09:00:00Z","event_type":"received","location":"processing_queue"},
                      {"timestamp":"2026-09-01T09:00:01Z","event_type":"approved","location":"approved_queue",
                       "worker_id":"w1"}]}"#
            .replace('\n', " ")
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        f
    }

    #[test]
    fn reads_a_record_and_stands_the_received_event_for_the_signals_own() {
        let f = file(&format!("{}\n", line()));
        let lines = read_file(f.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines.len(), 1);
        let (_, checked) = &lines[0];
        assert_eq!(checked.signal.normalised_ticker, "AAPL");
        assert_eq!(checked.events.len(), 1);
        assert_eq!(checked.events[0].event_type, SignalStatus::Approved);
        // Stable ids for events without one: a second import agrees.
        let again = read_file(f.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again[0].1.events[0].event_id, checked.events[0].event_id);
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let truncated = &line()[..80];
        let f = file(&format!("{}\n\n{truncated}\n", line()));
        let error = read_file(f.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(":3:"), "{error}");
        let wrong = line().replace("\"approved\",\"location\"", "\"approvd\",\"location\"");
        let f = file(&format!("{wrong}\n"));
        let error = read_file(f.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains(":1:") && error.contains("unknown status"),
            "{error}"
        );
        let f = file(&line().replace("\"format_version\":1", "\"format_version\":2"));
        let error = read_file(f.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("format_version 2"), "{error}");
    }
}
