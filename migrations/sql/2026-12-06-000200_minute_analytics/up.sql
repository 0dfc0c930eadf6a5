-- The hourly analytics tables are rebuilt from per-minute tables instead of
-- from raw rows.
--
-- Why: 2026-12-03-000100 rebuilt every (hour, ticker) with a change from raw
-- events, so each pass re-read the current hour's traffic so far: in a soak
-- at 500 signals/s a pass took 1.7 s in the first minute of the hour and
-- 18.6 s in the tenth, and it would keep growing until the hour closed,
-- taking a core from the writer every minute (BENCHMARKS.md, Soak). Now a
-- pass rebuilds the changed (minute, ticker) rows from raw rows, the same
-- definitions at minute grain, then each affected hour by summing at most 60
-- minute rows per combination (histograms are sparse JSONB maps of bucket
-- counts, so sums and merges are exact). A pass costs the changed minutes'
-- traffic plus a bounded merge, whatever the hour's volume.
--
-- Retention: the minute tables are minute rollups (`minute_rollups`, 30 days
-- by default). The refresher never rebuilds an hour older than the newest
-- retention horizon, the minute rollups' included, so an hour is never
-- summed from minutes of which some have left.
CREATE TABLE stage_latency_minutely (
    minute            TIMESTAMPTZ NOT NULL,
    normalised_ticker VARCHAR(64) NOT NULL,
    worker_id         TEXT NOT NULL,
    from_stage        TEXT NOT NULL,
    to_stage          TEXT NOT NULL,
    transitions       BIGINT NOT NULL,
    latency_sum_us    BIGINT NOT NULL,
    latency_max_us    BIGINT NOT NULL,
    latency_histogram JSONB NOT NULL,
    PRIMARY KEY (minute, normalised_ticker, worker_id, from_stage, to_stage)
);

CREATE TABLE ticker_activity_minutely (
    minute                TIMESTAMPTZ NOT NULL,
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
    PRIMARY KEY (minute, normalised_ticker)
);

-- The next pass fills the minute tables for every minute with events still
-- inside retention (and rebuilds their hours from them, to the same
-- figures): one pass as costly as the history, once, like the first pass
-- after 2026-12-03-000100.
INSERT INTO analytics_dirty (bucket_minute, normalised_ticker)
SELECT DISTINCT date_trunc('minute', e.ts), s.normalised_ticker
FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id
WHERE e.ts >= COALESCE((SELECT max(horizon) FROM retention_horizon), '-infinity');

GRANT SELECT ON stage_latency_minutely, ticker_activity_minutely
    TO audit_reader, audit_writer, audit_admin;
GRANT INSERT, UPDATE, DELETE ON stage_latency_minutely, ticker_activity_minutely
    TO audit_writer, audit_admin;
