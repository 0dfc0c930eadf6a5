DELETE FROM matview_refreshes WHERE view_name = 'mv_hourly_stage_latencies';
DROP MATERIALIZED VIEW mv_hourly_stage_latencies;
