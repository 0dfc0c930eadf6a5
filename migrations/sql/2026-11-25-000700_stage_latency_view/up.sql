-- GetStageLatencies from a materialized view instead of raw events.
--
-- Why: the raw answer runs lag() over every signal's timeline and an exact
-- percentile_cont per transition; over a day of the 10M-event benchmark
-- that is tens of seconds, beyond the reader's statement timeout. Hourly
-- rows are small and merge: counts, sums and maxima add up exactly, and the
-- latency histogram has the format of signal_metrics_summary.latency_histogram
-- ({"bucket": count}, bucket = latency_bucket(microseconds), 2% wide), so
-- any range of hours merges into percentiles within 2% of percentile_cont.
--
-- Transitions: lag() over each signal's FULL timeline (ORDER BY ts, sequence),
-- so a transition whose earlier event lies in an older hour is still
-- counted. Each is filed under the hour (UTC) of its LATER event; its worker
-- is the one that recorded the EARLIER event (the stage it starts with).
-- Latencies are kept in microseconds (the resolution of timestamptz), so
-- sums and maxima are exact integers.
--
-- Trade-off: a refresh recomputes the whole view from every event (there is
-- no incremental REFRESH); it runs CONCURRENTLY on the writer side, so
-- readers keep the old contents meanwhile, and how often it runs is
-- AUDIT_MATVIEW_REFRESH_SECS. Answers carry the refresh time as as_of
-- (matview_refreshes).
CREATE MATERIALIZED VIEW mv_hourly_stage_latencies AS
WITH transitions AS (
    SELECT date_trunc('hour', e.ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           s.normalised_ticker,
           COALESCE(lag(e.worker_id) OVER w, '') AS worker_id,
           lag(e.event_type) OVER w AS from_stage,
           e.event_type AS to_stage,
           (extract(epoch FROM e.ts - lag(e.ts) OVER w) * 1000000)::bigint AS us
    FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id
    WINDOW w AS (PARTITION BY e.signal_id ORDER BY e.ts, e.sequence)
), buckets AS (
    SELECT hour, normalised_ticker, worker_id, from_stage, to_stage, latency_bucket(us) AS bucket,
           count(*) AS n, sum(us) AS sum_us, max(us) AS max_us
    FROM transitions
    WHERE from_stage IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6
)
SELECT hour, normalised_ticker, worker_id,
       from_stage::text AS from_stage, to_stage::text AS to_stage,
       sum(n)::bigint AS transitions,
       sum(sum_us)::bigint AS latency_sum_us,
       max(max_us)::bigint AS latency_max_us,
       jsonb_object_agg(bucket, n) AS latency_histogram
FROM buckets
GROUP BY 1, 2, 3, 4, 5
WITH DATA;

-- For REFRESH ... CONCURRENTLY, and the range scans of GetStageLatencies.
CREATE UNIQUE INDEX mv_hourly_stage_latencies_key
    ON mv_hourly_stage_latencies (hour, normalised_ticker, worker_id, from_stage, to_stage);

INSERT INTO matview_refreshes VALUES ('mv_hourly_stage_latencies', now());
