ALTER TABLE signal_events DROP COLUMN recorded_by;
ALTER TABLE signals DROP COLUMN recorded_by;
