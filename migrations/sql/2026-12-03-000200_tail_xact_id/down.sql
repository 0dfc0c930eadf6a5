DROP INDEX signal_events_xact_idx;
ALTER TABLE signal_events DROP COLUMN xact_id;
