-- Failed events (error_info present or HTTP status >= 400) counted per
-- bucket, ticker, stage, error type and HTTP status, so GetErrorBreakdown
-- reads a few hundred summary rows instead of a day of raw events.
--
-- Kept exact the same way as signal_metrics_summary, by the same writer-side
-- refresher (audit-writer/src/store/rollups.rs) in the same transaction: the dirty
-- (minute, ticker) keys that the signal_events trigger already records are
-- recomputed from raw events (delete the key's rows, insert the new counts),
-- then the hour and day rows containing them from the minute rows. Writers
-- pay nothing extra.
--
-- A breakdown over any range is answered by tiling it with whole days,
-- whole hours and whole minutes (see audit-reader/src/queries/analytics/errors.rs), so
-- it is exact to the minute whatever its length. There is no '*' ticker here:
-- the ticker is itself one of the dimensions, and all tickers are their sum.

CREATE TABLE signal_error_summary (
    period_type       metrics_period NOT NULL,
    period_start      TIMESTAMPTZ NOT NULL,
    normalised_ticker VARCHAR(64) NOT NULL,
    -- The event type (pipeline stage) that failed.
    stage             signal_status NOT NULL,
    -- error_info ->> 'type' (or 'kind'), at most 64 characters; 'unknown'
    -- when error_info has neither, 'http' when there is no error_info.
    error_type        VARCHAR(64) NOT NULL,
    -- 0 when the event carried no HTTP status.
    http_status       INTEGER NOT NULL,
    events            BIGINT NOT NULL CHECK (events > 0),
    PRIMARY KEY (period_type, period_start, normalised_ticker, stage, error_type, http_status)
);

-- Summaries exist only for keys refreshed from now on: queue the keys of
-- failures already stored, so the refresher's first run covers them too.
INSERT INTO rollup_dirty (bucket_minute, normalised_ticker)
SELECT DISTINCT date_trunc('minute', e.ts), s.normalised_ticker
FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id
WHERE e.error_info IS NOT NULL OR e.http_status >= 400;
