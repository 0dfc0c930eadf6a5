-- The analytics materialized views become tables maintained incrementally,
-- from the same dirty keys as the minute rollups.
--
-- Why: REFRESH MATERIALIZED VIEW recomputes the whole history every time
-- (about a minute of a core per refresh at 10M events; at 50M a refresh
-- never finished within its interval). These tables hold the same figures
-- per HOUR and are rebuilt only for the hours that changed, so a refresh
-- costs the traffic of the hours it touches, whatever the history.
--
-- Maintenance (audit-writer/src/store/analytics.rs): the rollup refresher,
-- which already takes the (minute, ticker) keys the signal_events trigger
-- queues, appends the keys it took to analytics_dirty in the same
-- transaction (writers pay nothing more). The analytics refresher
-- (AUDIT_ANALYTICS_REFRESH_SECS, serialised by an advisory lock) takes those
-- keys and rebuilds
--   * the stage-latency hours of the events in those minutes AND the hours
--     of each such event's successor in its signal's timeline: a late event
--     splits the transition that spanned it, and that transition is filed
--     under the later event's hour, which may be a later hour than the
--     event's own;
--   * the activity hours (hour of created_at) of the signals those events
--     belong to (an event is what changes a signal's state).
-- Each (hour, ticker) is recomputed whole from raw rows (delete, insert),
-- so results are exact with respect to raw data, late events included.
-- Hours older than the retention horizon are never recomputed (like the
-- rollups): their raw rows are gone and the stored figures are the only
-- correct ones left, so they stay when raw data leaves.

-- Per hour of the LATER event, ticker, worker of the EARLIER event and
-- transition; the figures of mv_hourly_stage_latencies (see
-- 2026-11-25-000700_stage_latency_view for their meaning).
CREATE TABLE stage_latency_hourly (
    hour              TIMESTAMPTZ NOT NULL,
    normalised_ticker VARCHAR(64) NOT NULL,
    worker_id         TEXT NOT NULL,
    from_stage        TEXT NOT NULL,
    to_stage          TEXT NOT NULL,
    transitions       BIGINT NOT NULL,
    latency_sum_us    BIGINT NOT NULL,
    latency_max_us    BIGINT NOT NULL,
    latency_histogram JSONB NOT NULL,
    PRIMARY KEY (hour, normalised_ticker, worker_id, from_stage, to_stage)
);

-- The same without the worker dimension, plus '*' rows summed over every
-- ticker: a day of '*' rows is a few hundred histograms to merge, which
-- keeps GetStageLatencies over a day well under 100 ms.
CREATE TABLE stage_latency_hourly_by_ticker (
    hour              TIMESTAMPTZ NOT NULL,
    normalised_ticker VARCHAR(64) NOT NULL,
    from_stage        TEXT NOT NULL,
    to_stage          TEXT NOT NULL,
    transitions       BIGINT NOT NULL,
    latency_sum_us    BIGINT NOT NULL,
    latency_max_us    BIGINT NOT NULL,
    latency_histogram JSONB NOT NULL,
    PRIMARY KEY (hour, normalised_ticker, from_stage, to_stage)
);

-- Per hour of the signals' created_at and ticker, their current state:
-- the figures of mv_daily_ticker_activity, in a form that adds up to days.
-- Processing times: count, sum (exact average) and a latency histogram
-- (latency_bucket of microseconds) for the p95.
CREATE TABLE ticker_activity_hourly (
    hour                  TIMESTAMPTZ NOT NULL,
    normalised_ticker     VARCHAR(64) NOT NULL,
    signals               BIGINT NOT NULL,
    succeeded             BIGINT NOT NULL,
    rejected              BIGINT NOT NULL,
    failed                BIGINT NOT NULL,
    in_flight             BIGINT NOT NULL,
    errors                BIGINT NOT NULL,
    retries               BIGINT NOT NULL,
    processing_count      BIGINT NOT NULL,
    processing_sum_us     BIGINT NOT NULL,
    processing_histogram  JSONB NOT NULL,
    PRIMARY KEY (hour, normalised_ticker)
);

-- Minute keys handed over by the rollup refresher; like rollup_dirty, no
-- unique index (appends never wait).
CREATE TABLE analytics_dirty (
    bucket_minute     TIMESTAMPTZ NOT NULL,
    normalised_ticker VARCHAR(64) NOT NULL
);

-- When the analytics tables were last brought up to date (as_of of their
-- answers, and audit_analytics_age_seconds).
CREATE TABLE analytics_state (
    singleton    BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    refreshed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Everything already stored is dirty: the first refresh builds the tables
-- (once; from then on a refresh costs what changed). Until it has run, the
-- tables are as of nothing (the epoch), unless there is nothing to build.
INSERT INTO analytics_dirty (bucket_minute, normalised_ticker)
SELECT DISTINCT date_trunc('minute', e.ts), s.normalised_ticker
FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id;
INSERT INTO analytics_state (refreshed_at)
SELECT CASE WHEN EXISTS (SELECT FROM analytics_dirty) THEN 'epoch'::timestamptz ELSE now() END;

DROP MATERIALIZED VIEW mv_hourly_stage_latencies_by_ticker;
DROP MATERIALIZED VIEW mv_hourly_stage_latencies;
DROP MATERIALIZED VIEW mv_daily_ticker_activity;
DROP TABLE matview_refreshes;
-- Only materialized views needed the owner's rights to be refreshed.
DROP FUNCTION audit_refresh_materialized_view(TEXT);

-- Grants as in 2026-12-01-001100_least_privilege_roles: everyone reads,
-- the writer (and admin) recomputes the derived tables.
GRANT SELECT ON stage_latency_hourly, stage_latency_hourly_by_ticker, ticker_activity_hourly,
    analytics_dirty, analytics_state
    TO audit_reader, audit_writer, audit_admin;
GRANT INSERT, UPDATE, DELETE ON stage_latency_hourly, stage_latency_hourly_by_ticker,
    ticker_activity_hourly, analytics_dirty, analytics_state
    TO audit_writer, audit_admin;
