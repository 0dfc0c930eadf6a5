CREATE OR REPLACE FUNCTION mark_rollups_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (bucket_minute, normalised_ticker)
    SELECT DISTINCT date_trunc('minute', n.ts),
           (SELECT s.normalised_ticker FROM signals s WHERE s.signal_id = n.signal_id)
    FROM new_events n;
    RETURN NULL;
END $$;
DROP INDEX signal_events_search_idx;
ALTER TABLE signal_events DROP COLUMN search;
ALTER TABLE signal_events DROP COLUMN normalised_ticker;
ALTER TABLE signal_events ADD COLUMN search TSVECTOR GENERATED ALWAYS AS (
    to_tsvector('english',
        coalesce(details, '') || ' ' || coalesce(error_info::text, '') || ' ' || coalesce(response_data, ''))
) STORED;
CREATE INDEX signal_events_search_idx ON signal_events USING GIN (search);
