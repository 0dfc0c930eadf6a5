//! Rows as stored.

use crate::schema::{signal_event_ids, signal_events, signals};
use audit_core::{SignalLocation, SignalStatus};
use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
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
}

impl<'a> From<&'a audit_core::validate::NewEvent> for NewEventRow<'a> {
    fn from(event: &'a audit_core::validate::NewEvent) -> Self {
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
