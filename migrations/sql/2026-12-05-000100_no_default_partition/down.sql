-- The default partition again, empty (the rows stay in their day
-- partitions). Retention of this release refuses to run while it exists
-- (DETACH … CONCURRENTLY is impossible then); releases before this
-- migration detach with a plain DETACH.
CREATE TABLE signal_events_default PARTITION OF signal_events DEFAULT;
UPDATE partman.part_config SET infinite_time_partitions = false
WHERE parent_table = 'public.signal_events';
