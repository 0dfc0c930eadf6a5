//! Checked write requests: what the writer stores once a request passed the
//! rules in [`crate::rules`].

use crate::{SignalLocation, SignalStatus};
use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use uuid::Uuid;

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
    /// The authenticated caller that recorded it (none with auth off).
    pub recorded_by: Option<String>,
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
    /// The authenticated caller that recorded it (none with auth off).
    pub recorded_by: Option<String>,
}

impl NewEvent {
    /// Failed steps count towards the signal's `error_count`.
    pub fn is_error(&self) -> bool {
        self.error_info.is_some() || self.http_status.is_some_and(|status| status >= 400)
    }
}
