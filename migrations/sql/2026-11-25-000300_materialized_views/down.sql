DROP TABLE matview_refreshes;
DROP MATERIALIZED VIEW mv_daily_ticker_activity;
