-- Signals and their events, as in the migration plan, with the pipeline's
-- real statuses and locations as PostgreSQL enums.

CREATE TYPE signal_status AS ENUM (
    'received',
    'queued_processing',
    'processing',
    'approved',
    'rejected',
    'queued_forwarding',
    'forwarding',
    'forwarded_success',
    'forwarded_timeout',
    'forwarded_http_error',
    'forwarded_generic_error',
    'discarded',
    'error'
);

CREATE TYPE signal_location AS ENUM (
    'processing_queue',
    'approved_queue',
    'worker_processing',
    'worker_forwarding',
    'completed',
    'discarded'
);

CREATE TABLE signals (
    signal_id             UUID PRIMARY KEY,
    ticker                VARCHAR(64) NOT NULL,
    normalised_ticker     VARCHAR(64) NOT NULL,
    side                  VARCHAR(64) NOT NULL,
    action                VARCHAR(64) NOT NULL,
    price                 NUMERIC NOT NULL CHECK (price > 0),
    original_signal       JSONB NOT NULL,
    current_status        signal_status NOT NULL DEFAULT 'received',
    current_location      signal_location NOT NULL DEFAULT 'processing_queue',
    created_at            TIMESTAMPTZ NOT NULL,
    -- Timestamp of the latest event: an event older than this is stored but
    -- does not move current_status/current_location.
    updated_at            TIMESTAMPTZ NOT NULL,
    total_processing_time INTERVAL,
    error_count           INTEGER NOT NULL DEFAULT 0 CHECK (error_count >= 0),
    retry_count           INTEGER NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    tags                  TEXT[] NOT NULL DEFAULT '{}'
);

CREATE INDEX signals_ticker_idx ON signals (ticker);
CREATE INDEX signals_normalised_ticker_idx ON signals (normalised_ticker);
CREATE INDEX signals_created_at_idx ON signals (created_at, signal_id);
CREATE INDEX signals_updated_at_idx ON signals (updated_at, signal_id);
CREATE INDEX signals_current_status_idx ON signals (current_status);
CREATE INDEX signals_current_location_idx ON signals (current_location);
-- Composite indexes for ListSignals: filter by ticker or status, page by time.
CREATE INDEX signals_normalised_ticker_created_idx ON signals (normalised_ticker, created_at, signal_id);
CREATE INDEX signals_status_updated_idx ON signals (current_status, updated_at, signal_id);
CREATE INDEX signals_processing_time_idx ON signals (total_processing_time, signal_id);
CREATE INDEX signals_errors_idx ON signals (error_count, signal_id) WHERE error_count > 0;
CREATE INDEX signals_tags_idx ON signals USING GIN (tags);

-- Range-partitioned by day on the event time; pg_partman creates and retires
-- the partitions. The primary key must include the partition key.
CREATE TABLE signal_events (
    sequence      BIGSERIAL,
    event_id      UUID NOT NULL,
    signal_id     UUID NOT NULL REFERENCES signals (signal_id) ON DELETE CASCADE,
    ts            TIMESTAMPTZ NOT NULL,
    event_type    signal_status NOT NULL,
    location      signal_location NOT NULL,
    worker_id     VARCHAR(64),
    details       TEXT,
    error_info    JSONB,
    http_status   INTEGER CHECK (http_status BETWEEN 100 AND 599),
    response_data TEXT,
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sequence, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX signal_events_signal_ts_idx ON signal_events (signal_id, ts, sequence);
CREATE INDEX signal_events_ts_idx ON signal_events (ts, sequence);
CREATE INDEX signal_events_type_ts_idx ON signal_events (event_type, ts, sequence);

-- A unique index on a partitioned table must contain the partition key, so
-- event_id alone cannot be unique there; this small table makes client
-- event ids idempotent across all partitions.
CREATE TABLE signal_event_ids (
    event_id  UUID PRIMARY KEY,
    signal_id UUID NOT NULL REFERENCES signals (signal_id) ON DELETE CASCADE,
    ts        TIMESTAMPTZ NOT NULL
);
CREATE INDEX signal_event_ids_signal_idx ON signal_event_ids (signal_id);

CREATE SCHEMA IF NOT EXISTS partman;
CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;

-- Daily partitions, a week premade ahead; rows outside them land in
-- signal_events_default.
SELECT partman.create_parent(
    p_parent_table := 'public.signal_events',
    p_control := 'ts',
    p_type := 'native',
    p_interval := 'daily',
    p_premake := 7
);
