-- How many processing and forwarding events each signal has: the steps
-- whose second and later occurrences are retries (retry_count).
--
-- Why: to count retries, RecordEvent needed these counts for every signal
-- it touched and took them from the events themselves, one GROUP BY over
-- signal_events per transaction (an index probe into every day partition
-- per signal, and a round trip of its own). Kept on the row, they come with
-- the row lock the write path takes anyway, and the write path updates them
-- in the same UPDATE as retry_count (audit-writer/src/store/events.rs).
-- A constant default rewrites nothing; the CHECKs scan the table once.
ALTER TABLE signals
    ADD COLUMN processing_starts INTEGER NOT NULL DEFAULT 0 CHECK (processing_starts >= 0),
    ADD COLUMN forwarding_starts INTEGER NOT NULL DEFAULT 0 CHECK (forwarding_starts >= 0);

-- Signals stored before: counted from their events, once.
UPDATE signals AS s
SET processing_starts = c.processing, forwarding_starts = c.forwarding
FROM (
    SELECT signal_id,
           count(*) FILTER (WHERE event_type = 'processing') AS processing,
           count(*) FILTER (WHERE event_type = 'forwarding') AS forwarding
    FROM signal_events
    WHERE event_type IN ('processing', 'forwarding')
    GROUP BY signal_id
) AS c
WHERE s.signal_id = c.signal_id;
