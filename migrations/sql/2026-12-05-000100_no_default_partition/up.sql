-- signal_events loses its DEFAULT partition. PostgreSQL refuses
-- `DETACH PARTITION … CONCURRENTLY` while a partitioned table has one, so
-- with it retention had to detach a day with a plain DETACH (ACCESS
-- EXCLUSIVE on the parent: every writer and reader waits). Without it a row
-- whose day has no partition is refused (the services answer
-- FAILED_PRECONDITION naming the time and the day): the writer's
-- maintenance makes partitions ahead, and `audit-admin import`/`restore`
-- make the past days they need.
--
-- Rows that sit in the default partition (events outside the premade days)
-- move into day partitions of their own first: the default is detached,
-- pg_partman makes the partition of every UTC day it holds (as
-- `audit-admin partitions ensure` does), the rows go back through the
-- parent with their original sequence numbers, and the detached table is
-- dropped. Re-inserting marks their rollup keys dirty again; the refresher
-- recomputes the same figures.
ALTER TABLE signal_events DETACH PARTITION signal_events_default;

SELECT partman.create_partition_time(
    'public.signal_events',
    ARRAY(SELECT DISTINCT date_trunc('day', ts, 'UTC') FROM signal_events_default ORDER BY 1))
WHERE EXISTS (SELECT FROM signal_events_default);

INSERT INTO signal_events (sequence, event_id, signal_id, ts, event_type, location, worker_id,
                           details, error_info, http_status, response_data, recorded_at, recorded_by)
SELECT sequence, event_id, signal_id, ts, event_type, location, worker_id,
       details, error_info, http_status, response_data, recorded_at, recorded_by
FROM signal_events_default;

DROP TABLE signal_events_default;

-- pg_partman makes new partitions only ahead of the newest row by default
-- (infinite_time_partitions false): after a week without events, today's
-- partition would never be made, and without a default partition the
-- first event would be refused. Premake from the clock instead.
UPDATE partman.part_config SET infinite_time_partitions = true
WHERE parent_table = 'public.signal_events';
