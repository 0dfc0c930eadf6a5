//! Turns protobuf write requests into checked domain values.
//!
//! Everything a client can get wrong is caught here, before a transaction
//! starts, so a rejected request never leaves a trace in the database.

use crate::{DomainError, SignalLocation, SignalStatus, convert, normalise_ticker};
use audit_proto::v1 as pb;
use bigdecimal::BigDecimal;
use chrono::{DateTime, TimeDelta, Utc};
use std::str::FromStr;
use uuid::Uuid;

/// Bounds on what one request may carry; all come from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `original_signal_json`, `error_info_json`, `details` or `response_data`.
    pub max_payload_bytes: usize,
    /// How far ahead of the server clock a timestamp may be.
    pub max_clock_skew: TimeDelta,
    pub max_tags: usize,
    pub max_tag_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_clock_skew: TimeDelta::minutes(5),
            max_tags: 32,
            max_tag_len: 64,
        }
    }
}

const MAX_SHORT_TEXT: usize = 64;

/// A signal ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSignal {
    pub signal_id: Uuid,
    pub ticker: String,
    pub normalised_ticker: String,
    pub side: String,
    pub action: String,
    pub price: BigDecimal,
    pub original_signal: serde_json::Value,
    pub tags: Vec<String>,
    pub received_at: DateTime<Utc>,
}

/// An event ready to apply to its signal.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub signal_id: Uuid,
    pub event_type: SignalStatus,
    pub location: SignalLocation,
    pub timestamp: DateTime<Utc>,
    pub worker_id: Option<String>,
    pub details: Option<String>,
    pub error_info: Option<serde_json::Value>,
    pub http_status: Option<i32>,
    pub response_data: Option<String>,
}

impl NewEvent {
    /// Failed steps count towards the signal's `error_count`.
    pub fn is_error(&self) -> bool {
        self.error_info.is_some() || self.http_status.is_some_and(|status| status >= 400)
    }
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
    let ticker = short_text("ticker", &signal.ticker)?;
    let normalised_ticker = normalise_ticker(&ticker);
    if normalised_ticker.is_empty() {
        return Err(DomainError::invalid(
            "ticker",
            "has no symbol after normalisation",
        ));
    }
    let side = short_text("side", &signal.side)?.to_lowercase();
    let action = short_text("action", &signal.action)?.to_lowercase();
    let price = price("price", signal.price)?;
    let original_signal = json("original_signal_json", &signal.original_signal_json, limits)?
        .ok_or_else(|| DomainError::invalid("original_signal_json", "must not be empty"))?;
    let tags = tags("tags", &signal.tags, limits)?;
    let received_at = time("received_at", signal.received_at.as_ref(), limits, now)?;
    Ok(NewSignal {
        signal_id,
        ticker,
        normalised_ticker,
        side,
        action,
        price,
        original_signal,
        tags,
        received_at,
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
    let event_id = convert::uuid("event_id", &event.event_id)?;
    let signal_id = convert::uuid("signal_id", &event.signal_id)?;
    let event_type = convert::status("event_type", event.event_type)?;
    let location = convert::location("location", event.location)?;
    let timestamp = time("timestamp", event.timestamp.as_ref(), limits, now)?;
    let http_status = match event.http_status {
        0 => None,
        status @ 100..=599 => Some(status),
        other => {
            return Err(DomainError::invalid(
                "http_status",
                format!("{other} is not an HTTP status (100-599, or 0 for none)"),
            ));
        }
    };
    Ok(NewEvent {
        event_id,
        signal_id,
        event_type,
        location,
        timestamp,
        worker_id: optional_text("worker_id", &event.worker_id, MAX_SHORT_TEXT)?,
        details: optional_text("details", &event.details, limits.max_payload_bytes)?,
        error_info: json("error_info_json", &event.error_info_json, limits)?,
        http_status,
        response_data: optional_text(
            "response_data",
            &event.response_data,
            limits.max_payload_bytes,
        )?,
    })
}

/// Tags as stored: trimmed, unique, in the order given.
pub fn tags(field: &str, tags: &[String], limits: &Limits) -> Result<Vec<String>, DomainError> {
    if tags.len() > limits.max_tags {
        return Err(DomainError::invalid(
            field,
            format!("at most {} tags", limits.max_tags),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.trim();
        if tag.is_empty() || tag.len() > limits.max_tag_len {
            return Err(DomainError::invalid(
                format!("{field}[{i}]"),
                format!("must be 1 to {} bytes", limits.max_tag_len),
            ));
        }
        if !out.iter().any(|seen| seen == tag) {
            out.push(tag.to_owned());
        }
    }
    Ok(out)
}

fn short_text(field: &str, value: &str) -> Result<String, DomainError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_SHORT_TEXT {
        return Err(DomainError::invalid(
            field,
            format!("longer than {MAX_SHORT_TEXT} bytes"),
        ));
    }
    Ok(value.to_owned())
}

fn optional_text(field: &str, value: &str, max: usize) -> Result<Option<String>, DomainError> {
    if value.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

fn price(field: &str, value: f64) -> Result<BigDecimal, DomainError> {
    if !value.is_finite() || value <= 0.0 {
        return Err(DomainError::invalid(
            field,
            format!("must be a finite number above 0, got {value}"),
        ));
    }
    // Through the shortest decimal string, so 0.1 is stored as 0.1 and not as
    // the binary fraction closest to it.
    BigDecimal::from_str(&value.to_string()).map_err(|e| DomainError::invalid(field, e.to_string()))
}

fn json(
    field: &str,
    value: &str,
    limits: &Limits,
) -> Result<Option<serde_json::Value>, DomainError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    if value.len() > limits.max_payload_bytes {
        return Err(DomainError::invalid(
            field,
            format!(
                "{} bytes is larger than the limit of {} bytes",
                value.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    serde_json::from_str(value)
        .map(Some)
        .map_err(|e| DomainError::invalid(field, format!("not valid JSON: {e}")))
}

fn time(
    field: &str,
    value: Option<&prost_types::Timestamp>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, DomainError> {
    let Some(value) = value else {
        return Ok(now);
    };
    let at = convert::timestamp(field, value)?;
    if at > now + limits.max_clock_skew {
        return Err(DomainError::invalid(
            field,
            format!(
                "{at} is more than {}s ahead of the server clock",
                limits.max_clock_skew.num_seconds()
            ),
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("price", Box::new(|s| s.price = f64::NAN)),
            ("price", Box::new(|s| s.price = 0.0)),
            (
                "original_signal_json",
                Box::new(|s| s.original_signal_json = "{".into()),
            ),
            ("signal_id", Box::new(|s| s.signal_id = "nope".into())),
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
}
