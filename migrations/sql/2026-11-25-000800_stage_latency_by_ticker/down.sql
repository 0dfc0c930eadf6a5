DELETE FROM matview_refreshes WHERE view_name = 'mv_hourly_stage_latencies_by_ticker';
DROP MATERIALIZED VIEW mv_hourly_stage_latencies_by_ticker;
