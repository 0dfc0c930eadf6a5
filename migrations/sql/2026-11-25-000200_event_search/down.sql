DROP INDEX signal_events_search_idx;
ALTER TABLE signal_events DROP COLUMN search;
