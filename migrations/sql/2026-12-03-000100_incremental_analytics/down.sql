-- Back to the materialized views (their latest definitions: 000700,
-- 000800, 000900), refreshed here once, with their grants and the
-- owner-rights refresh function of 001100.
DROP TABLE analytics_state;
DROP TABLE analytics_dirty;
DROP TABLE ticker_activity_hourly;
DROP TABLE stage_latency_hourly_by_ticker;
DROP TABLE stage_latency_hourly;

CREATE MATERIALIZED VIEW mv_daily_ticker_activity AS
SELECT date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
       normalised_ticker,
       count(*) AS signals,
       count(*) FILTER (WHERE current_status = 'forwarded_success') AS succeeded,
       count(*) FILTER (WHERE current_status IN ('rejected', 'discarded')) AS rejected,
       count(*) FILTER (WHERE current_status IN ('forwarded_timeout', 'forwarded_http_error',
                                                 'forwarded_generic_error', 'error')) AS failed,
       count(*) FILTER (WHERE NOT signal_status_is_terminal(current_status)) AS in_flight,
       sum(error_count) AS errors,
       sum(retry_count) AS retries,
       avg(extract(epoch FROM total_processing_time) * 1000) AS avg_processing_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM total_processing_time) * 1000)
           AS p95_processing_ms
FROM signals
GROUP BY 1, 2
WITH DATA;
CREATE UNIQUE INDEX mv_daily_ticker_activity_key ON mv_daily_ticker_activity (day, normalised_ticker);

CREATE TABLE matview_refreshes (
    view_name    TEXT PRIMARY KEY,
    refreshed_at TIMESTAMPTZ NOT NULL
);
INSERT INTO matview_refreshes VALUES ('mv_daily_ticker_activity', now());

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

CREATE MATERIALIZED VIEW mv_hourly_stage_latencies_by_ticker AS
WITH src AS (
    SELECT hour, normalised_ticker, from_stage, to_stage, transitions, latency_sum_us,
           latency_max_us, latency_histogram
    FROM mv_hourly_stage_latencies
), totals AS (
    SELECT hour, normalised_ticker, from_stage, to_stage,
           sum(transitions)::bigint AS transitions,
           sum(latency_sum_us)::bigint AS latency_sum_us,
           max(latency_max_us)::bigint AS latency_max_us
    FROM src GROUP BY 1, 2, 3, 4
), hist AS (
    SELECT hour, normalised_ticker, from_stage, to_stage, jsonb_object_agg(b, n) AS latency_histogram
    FROM (SELECT hour, normalised_ticker, from_stage, to_stage, j.key AS b, sum(j.value::bigint) AS n
          FROM src, jsonb_each_text(src.latency_histogram) AS j
          GROUP BY 1, 2, 3, 4, 5) t
    GROUP BY 1, 2, 3, 4
)
SELECT t.hour, t.normalised_ticker, t.from_stage, t.to_stage, t.transitions, t.latency_sum_us,
       t.latency_max_us, h.latency_histogram
FROM totals t JOIN hist h USING (hour, normalised_ticker, from_stage, to_stage)
WITH DATA;

CREATE UNIQUE INDEX mv_hourly_stage_latencies_by_ticker_key
    ON mv_hourly_stage_latencies_by_ticker (hour, normalised_ticker, from_stage, to_stage);

INSERT INTO matview_refreshes (view_name, refreshed_at)
SELECT 'mv_hourly_stage_latencies_by_ticker', refreshed_at
FROM matview_refreshes WHERE view_name = 'mv_hourly_stage_latencies';

-- REFRESH MATERIALIZED VIEW CONCURRENTLY of one of this schema's views,
-- with the owner's rights; any other name is refused.
CREATE FUNCTION audit_refresh_materialized_view(view_name TEXT) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_matviews WHERE schemaname = 'public' AND matviewname = view_name) THEN
        RAISE EXCEPTION 'no materialized view %', view_name USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY public.%I', view_name);
END
$$;
REVOKE ALL ON FUNCTION audit_refresh_materialized_view(TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_refresh_materialized_view(TEXT) TO audit_writer, audit_admin;

GRANT SELECT ON matview_refreshes, mv_daily_ticker_activity, mv_hourly_stage_latencies,
    mv_hourly_stage_latencies_by_ticker
    TO audit_reader, audit_writer, audit_admin;
GRANT INSERT, UPDATE, DELETE ON matview_refreshes TO audit_writer, audit_admin;
