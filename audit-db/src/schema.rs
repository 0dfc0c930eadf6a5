//! Diesel's view of the tables created by `migrations/`.

diesel::table! {
    use diesel::sql_types::*;
    use audit_core::{SignalLocationMapping, SignalStatusMapping};

    signals (signal_id) {
        signal_id -> Uuid,
        ticker -> Varchar,
        normalised_ticker -> Varchar,
        side -> Varchar,
        action -> Varchar,
        price -> Numeric,
        original_signal -> Jsonb,
        current_status -> SignalStatusMapping,
        current_location -> SignalLocationMapping,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        total_processing_time -> Nullable<Interval>,
        error_count -> Int4,
        retry_count -> Int4,
        tags -> Array<Text>,
        recorded_by -> Nullable<Text>,
        // Also `processing_starts` and `forwarding_starts` (INTEGER NOT
        // NULL, retry counting's per-signal counts): not declared, since
        // `table!` takes 16 columns without diesel's (slow to compile)
        // `32-column-tables` feature. Only the writer's constant-shape
        // statements read and write them (`audit-writer/src/store/statements.rs`).
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use audit_core::{SignalLocationMapping, SignalStatusMapping};

    signal_events (sequence, ts) {
        sequence -> Int8,
        event_id -> Uuid,
        signal_id -> Uuid,
        ts -> Timestamptz,
        event_type -> SignalStatusMapping,
        location -> SignalLocationMapping,
        worker_id -> Nullable<Varchar>,
        details -> Nullable<Text>,
        error_info -> Nullable<Jsonb>,
        http_status -> Nullable<Int4>,
        response_data -> Nullable<Text>,
        recorded_at -> Timestamptz,
        recorded_by -> Nullable<Text>,
        normalised_ticker -> Text,
    }
}

diesel::table! {
    signal_event_ids (event_id) {
        event_id -> Uuid,
        signal_id -> Uuid,
        ts -> Timestamptz,
    }
}

diesel::joinable!(signal_events -> signals (signal_id));
diesel::joinable!(signal_event_ids -> signals (signal_id));
diesel::allow_tables_to_appear_in_same_query!(signals, signal_events, signal_event_ids);
