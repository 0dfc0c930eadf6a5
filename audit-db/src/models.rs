//! Rows as stored.

use crate::schema::{signal_event_ids, signal_events, signals};
use audit_core::{NewSignal, SignalLocation, SignalState, SignalStatus};
use bigdecimal::BigDecimal;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = signals, check_for_backend(diesel::pg::Pg))]
pub struct SignalRow {
    pub signal_id: Uuid,
    pub ticker: String,
    pub normalised_ticker: String,
    pub side: String,
    pub action: String,
    pub price: BigDecimal,
    pub original_signal: serde_json::Value,
    pub current_status: SignalStatus,
    pub current_location: SignalLocation,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub total_processing_time: Option<PgInterval>,
    pub error_count: i32,
    pub retry_count: i32,
    pub tags: Vec<String>,
    /// The caller that recorded it; none for rows from before
    /// authentication or written with auth off.
    pub recorded_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = signal_events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub sequence: i64,
    pub event_id: Uuid,
    pub signal_id: Uuid,
    pub ts: DateTime<Utc>,
    pub event_type: SignalStatus,
    pub location: SignalLocation,
    pub worker_id: Option<String>,
    pub details: Option<String>,
    pub error_info: Option<serde_json::Value>,
    pub http_status: Option<i32>,
    pub response_data: Option<String>,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = signal_events)]
pub struct NewEventRow<'a> {
    pub event_id: Uuid,
    pub signal_id: Uuid,
    pub ts: DateTime<Utc>,
    pub event_type: SignalStatus,
    pub location: SignalLocation,
    pub worker_id: Option<&'a str>,
    pub details: Option<&'a str>,
    pub error_info: Option<&'a serde_json::Value>,
    pub http_status: Option<i32>,
    pub response_data: Option<&'a str>,
    pub recorded_by: Option<&'a str>,
    pub normalised_ticker: &'a str,
}

impl<'a> NewEventRow<'a> {
    /// The row of `event`, for a signal whose normalised ticker is
    /// `normalised_ticker` (every event carries it for the search index).
    pub fn new(event: &'a audit_core::NewEvent, normalised_ticker: &'a str) -> Self {
        Self {
            event_id: event.event_id,
            signal_id: event.signal_id,
            ts: event.timestamp,
            event_type: event.event_type,
            location: event.location,
            worker_id: event.worker_id.as_deref(),
            details: event.details.as_deref(),
            error_info: event.error_info.as_ref(),
            http_status: event.http_status,
            response_data: event.response_data.as_deref(),
            recorded_by: event.recorded_by.as_deref(),
            normalised_ticker,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = signal_event_ids, check_for_backend(diesel::pg::Pg))]
pub struct EventIdRow {
    pub event_id: Uuid,
    pub signal_id: Uuid,
    pub ts: DateTime<Utc>,
}

/// Intervals written by this service only use microseconds; days and months
/// are folded in for intervals written by hand.
pub fn interval_to_delta(interval: &PgInterval) -> TimeDelta {
    TimeDelta::microseconds(interval.microseconds)
        + TimeDelta::days(i64::from(interval.days) + 30 * i64::from(interval.months))
}

pub fn delta_to_interval(delta: TimeDelta) -> PgInterval {
    PgInterval::from_microseconds(delta.num_microseconds().unwrap_or(i64::MAX))
}

impl SignalRow {
    /// The row a new signal is stored as: received, no event applied.
    pub fn received(signal: &NewSignal) -> Self {
        let state = SignalState::received(signal.received_at);
        Self {
            signal_id: signal.signal_id,
            ticker: signal.ticker.clone(),
            normalised_ticker: signal.normalised_ticker.clone(),
            side: signal.side.clone(),
            action: signal.action.clone(),
            price: signal.price.clone(),
            original_signal: signal.original_signal.clone(),
            current_status: state.status,
            current_location: state.location,
            created_at: state.created_at,
            updated_at: state.updated_at,
            total_processing_time: None,
            error_count: state.error_count,
            retry_count: state.retry_count,
            tags: signal.tags.clone(),
            recorded_by: signal.recorded_by.clone(),
        }
    }

    /// The part of the row the state machine owns.
    pub fn state(&self) -> SignalState {
        SignalState {
            status: self.current_status,
            location: self.current_location,
            created_at: self.created_at,
            updated_at: self.updated_at,
            total_processing_time: self.total_processing_time.as_ref().map(interval_to_delta),
            error_count: self.error_count,
            retry_count: self.retry_count,
        }
    }

    pub fn set_state(&mut self, state: &SignalState) {
        self.current_status = state.status;
        self.current_location = state.location;
        self.created_at = state.created_at;
        self.updated_at = state.updated_at;
        self.total_processing_time = state.total_processing_time.map(delta_to_interval);
        self.error_count = state.error_count;
        self.retry_count = state.retry_count;
    }
}
