//! Rows to protobuf messages.

use crate::convert::{location_to_proto, status_to_proto, to_duration, to_timestamp};
use audit_db::models::{EventRow, SignalRow, interval_to_delta};
use audit_proto::v1 as pb;
use bigdecimal::ToPrimitive;

pub fn signal_to_proto(row: SignalRow) -> pb::Signal {
    pb::Signal {
        signal_id: row.signal_id.to_string(),
        ticker: row.ticker,
        normalised_ticker: row.normalised_ticker,
        side: row.side,
        action: row.action,
        price: row.price.to_f64().unwrap_or(f64::NAN),
        original_signal_json: row.original_signal.to_string(),
        current_status: status_to_proto(row.current_status).into(),
        current_location: location_to_proto(row.current_location).into(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        total_processing_time: row
            .total_processing_time
            .as_ref()
            .map(|i| to_duration(interval_to_delta(i))),
        error_count: row.error_count,
        retry_count: row.retry_count,
        tags: row.tags,
        recorded_by: row.recorded_by.unwrap_or_default(),
    }
}

pub fn event_to_proto(row: EventRow) -> pb::SignalEvent {
    pb::SignalEvent {
        event_id: row.event_id.to_string(),
        signal_id: row.signal_id.to_string(),
        event_type: status_to_proto(row.event_type).into(),
        location: location_to_proto(row.location).into(),
        timestamp: Some(to_timestamp(row.ts)),
        worker_id: row.worker_id.unwrap_or_default(),
        details: row.details.unwrap_or_default(),
        error_info_json: row.error_info.map(|v| v.to_string()).unwrap_or_default(),
        http_status: row.http_status.unwrap_or(0),
        response_data: row.response_data.unwrap_or_default(),
        sequence: row.sequence,
        recorded_by: row.recorded_by.unwrap_or_default(),
    }
}
