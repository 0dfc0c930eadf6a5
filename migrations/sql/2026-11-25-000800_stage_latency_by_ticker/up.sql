-- mv_hourly_stage_latencies without the worker dimension, for the questions
-- that do not group by worker (most of them). The worker dimension makes the
-- hourly view about eight times larger, and GetStageLatencies' cost is
-- merging those rows' histograms: about 35,000 rows for a day of the
-- benchmark's 20 tickers and 8 workers, ~350 ms.
--
-- Derived from mv_hourly_stage_latencies (sums, maxima and histograms add
-- up exactly), so refreshing it costs little; the writer refreshes both in
-- one transaction (audit-writer/src/store/rollups.rs) so they always agree and share
-- one as_of in matview_refreshes.
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
