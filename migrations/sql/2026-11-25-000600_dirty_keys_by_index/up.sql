-- The dirty-key trigger looked tickers up with a join that PL/pgSQL plans
-- once per session and then keeps: planned while `signals` was small, it
-- stayed a hash join over a sequential scan of `signals` for every INSERT
-- statement, however large the table grew (profiled: 15 % of the machine's
-- CPU under unary ingest at 80,000 signals). A scalar subquery per new
-- event is always one primary-key probe, the same work the foreign-key
-- check already does.
CREATE OR REPLACE FUNCTION mark_rollups_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_dirty (bucket_minute, normalised_ticker)
    SELECT DISTINCT date_trunc('minute', n.ts),
           (SELECT s.normalised_ticker FROM signals s WHERE s.signal_id = n.signal_id)
    FROM new_events n;
    RETURN NULL;
END $$;
