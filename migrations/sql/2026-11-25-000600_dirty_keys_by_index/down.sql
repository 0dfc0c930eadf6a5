CREATE OR REPLACE FUNCTION mark_rollups_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (bucket_minute, normalised_ticker)
    SELECT DISTINCT date_trunc('minute', n.ts), s.normalised_ticker
    FROM new_events n JOIN signals s ON s.signal_id = n.signal_id;
    RETURN NULL;
END $$;
