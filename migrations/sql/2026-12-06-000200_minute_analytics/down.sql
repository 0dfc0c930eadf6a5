-- The hourly tables stay correct: the previous release rebuilds hours from
-- raw rows.
DROP TABLE ticker_activity_minutely;
DROP TABLE stage_latency_minutely;
