//! Protobuf write requests to checked domain values. Every rule is in
//! `audit_core::rules`; this module only says which field each applies to.

use crate::convert;
use audit_core::rules::{self, Limits};
use audit_core::{DomainError, NewEvent, NewSignal};
use audit_proto::v1 as pb;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A message field that must be present.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, DomainError> {
    value.ok_or_else(|| DomainError::invalid(field, "is required"))
}

pub fn new_signal(
    signal: &pb::NewSignal,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<NewSignal, DomainError> {
    let signal_id = if signal.signal_id.is_empty() {
        Uuid::new_v4()
    } else {
        convert::uuid("signal_id", &signal.signal_id)?
    };
    let (ticker, normalised_ticker) = rules::ticker("ticker", &signal.ticker)?;
    let original_signal =
        rules::json("original_signal_json", &signal.original_signal_json, limits)?
            .ok_or_else(|| DomainError::invalid("original_signal_json", "must not be empty"))?;
    Ok(NewSignal {
        signal_id,
        ticker,
        normalised_ticker,
        side: rules::short_text("side", &signal.side)?.to_lowercase(),
        action: rules::short_text("action", &signal.action)?.to_lowercase(),
        price: rules::price("price", signal.price)?,
        original_signal,
        tags: rules::tags("tags", &signal.tags, limits)?,
        received_at: time("received_at", signal.received_at.as_ref(), limits, now)?,
        // Set by the handler from the authenticated caller, never by the request.
        recorded_by: None,
    })
}

pub fn new_event(
    event: &pb::NewEvent,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<NewEvent, DomainError> {
    if event.event_id.is_empty() {
        return Err(DomainError::invalid(
            "event_id",
            "must be a client-chosen UUID so that retries are idempotent",
        ));
    }
    rules::searchable_text(
        "details",
        &[
            event.details.len(),
            event.error_info_json.len(),
            event.response_data.len(),
        ],
    )?;
    Ok(NewEvent {
        event_id: convert::uuid("event_id", &event.event_id)?,
        signal_id: convert::uuid("signal_id", &event.signal_id)?,
        event_type: convert::status("event_type", event.event_type)?,
        location: convert::location("location", event.location)?,
        timestamp: time("timestamp", event.timestamp.as_ref(), limits, now)?,
        worker_id: rules::optional_text("worker_id", &event.worker_id, rules::MAX_SHORT_TEXT)?,
        details: rules::optional_text("details", &event.details, limits.max_payload_bytes)?,
        error_info: rules::json("error_info_json", &event.error_info_json, limits)?,
        http_status: rules::http_status("http_status", event.http_status)?,
        response_data: rules::optional_text(
            "response_data",
            &event.response_data,
            limits.max_payload_bytes,
        )?,
        recorded_by: None,
    })
}

/// A client timestamp, or the server's clock when absent.
fn time(
    field: &str,
    value: Option<&prost_types::Timestamp>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, DomainError> {
    match value {
        None => Ok(now),
        Some(value) => rules::not_in_future(field, convert::timestamp(field, value)?, limits, now),
    }
}

/// Bounds of a time range, each optional; `start` must come before `end`.
pub type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

pub fn time_range(field: &str, range: Option<&pb::TimeRange>) -> Result<Range, DomainError> {
    let Some(range) = range else {
        return Ok((None, None));
    };
    let bound = |name: &str, t: Option<&prost_types::Timestamp>| {
        t.map(|t| convert::timestamp(&format!("{field}.{name}"), t))
            .transpose()
    };
    let start = bound("start", range.start.as_ref())?;
    let end = bound("end", range.end.as_ref())?;
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        return Err(DomainError::invalid(
            field,
            format!("start {start} is not before end {end}"),
        ));
    }
    Ok((start, end))
}

/// A time range whose both ends are required.
pub fn closed_range(
    field: &str,
    range: Option<&pb::TimeRange>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), DomainError> {
    match time_range(field, range)? {
        (Some(from), Some(to)) => Ok((from, to)),
        _ => Err(DomainError::invalid(field, "start and end are required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn signal() -> pb::NewSignal {
        pb::NewSignal {
            ticker: "NASDAQ:AAPL".into(),
            side: "BUY".into(),
            action: "open".into(),
            price: 187.25,
            original_signal_json: r#"{"raw":"buy AAPL"}"#.into(),
            ..Default::default()
        }
    }

    type Breaker = Box<dyn Fn(&mut pb::NewSignal)>;

    fn field_of(err: DomainError) -> String {
        match err {
            DomainError::Invalid { field, .. } => field,
        }
    }

    #[test]
    fn accepts_a_good_signal() {
        let s = new_signal(&signal(), &Limits::default(), Utc::now()).unwrap();
        assert_eq!(s.normalised_ticker, "AAPL");
        assert_eq!(s.side, "buy");
        assert_eq!(s.price.to_string(), "187.25");
    }

    #[test]
    fn names_the_bad_field() {
        let limits = Limits::default();
        let now = Utc::now();
        let cases: Vec<(&str, Breaker)> = vec![
            ("ticker", Box::new(|s| s.ticker = " ".into())),
            ("side", Box::new(|s| s.side = "b\0".into())),
            ("price", Box::new(|s| s.price = f64::NAN)),
            ("price", Box::new(|s| s.price = 0.0)),
            (
                "original_signal_json",
                Box::new(|s| s.original_signal_json = "{".into()),
            ),
            (
                "original_signal_json",
                Box::new(|s| s.original_signal_json = r#"{"a":"\u0000"}"#.into()),
            ),
            ("signal_id", Box::new(|s| s.signal_id = "nope".into())),
            ("tags[0]", Box::new(|s| s.tags = vec!["\0".into()])),
            (
                "received_at",
                Box::new(|s| {
                    s.received_at = Some(convert::to_timestamp(Utc::now() + TimeDelta::hours(1)))
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = signal();
            mutate(&mut s);
            assert_eq!(field_of(new_signal(&s, &limits, now).unwrap_err()), field);
        }
    }

    #[test]
    fn names_the_bad_event_field() {
        let good = pb::NewEvent {
            event_id: Uuid::new_v4().to_string(),
            signal_id: Uuid::new_v4().to_string(),
            event_type: pb::SignalStatus::Processing as i32,
            location: pb::SignalLocation::WorkerProcessing as i32,
            ..Default::default()
        };
        let limits = Limits::default();
        assert!(new_event(&good, &limits, Utc::now()).is_ok());
        for (field, event) in [
            (
                "worker_id",
                pb::NewEvent {
                    worker_id: "w\0".into(),
                    ..good.clone()
                },
            ),
            (
                "details",
                pb::NewEvent {
                    details: "\0".into(),
                    ..good.clone()
                },
            ),
            (
                "response_data",
                pb::NewEvent {
                    response_data: "a\0".into(),
                    ..good.clone()
                },
            ),
            (
                "error_info_json",
                pb::NewEvent {
                    error_info_json: r#"["\u0000"]"#.into(),
                    ..good.clone()
                },
            ),
            (
                "http_status",
                pb::NewEvent {
                    http_status: 42,
                    ..good.clone()
                },
            ),
            (
                "event_type",
                pb::NewEvent {
                    event_type: 0,
                    ..good.clone()
                },
            ),
            (
                "event_id",
                pb::NewEvent {
                    event_id: String::new(),
                    ..good.clone()
                },
            ),
        ] {
            assert_eq!(
                field_of(new_event(&event, &limits, Utc::now()).unwrap_err()),
                field
            );
        }
    }
}
