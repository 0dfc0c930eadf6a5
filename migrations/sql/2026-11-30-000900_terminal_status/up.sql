-- "Terminal status" defined once for SQL, mirroring SignalStatus::is_terminal
-- in audit-core (an integration test checks that the two agree for every
-- status). IMMUTABLE and written in SQL so the planner inlines it.
CREATE FUNCTION signal_status_is_terminal(status signal_status) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN status IN ('rejected', 'forwarded_success', 'forwarded_timeout', 'forwarded_http_error',
                  'forwarded_generic_error', 'discarded', 'error');

-- The daily activity view counted in-flight signals with its own copy of the list.
DROP MATERIALIZED VIEW mv_daily_ticker_activity;
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
