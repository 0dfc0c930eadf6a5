-- StreamEvents finds new commits through the inserting transaction's id
-- instead of rescanning every event of the last 10 minutes on each poll
-- (see audit-reader/src/queries/tail.rs): a transaction the replica has not
-- seen commit yet has an id at or above its snapshot's xmin, so the tail
-- keeps that as its floor and reads only the events at or above it.
-- `xmin` itself cannot be indexed (a system column); this is the same
-- top-level id as a plain BIGINT (xid8 is 64-bit and never wraps).
-- Two statements, so existing rows are not rewritten (a volatile default in
-- ADD COLUMN would rewrite the table); they keep NULL, and only a resume
-- token from before this migration reads them (by recorded_at).
ALTER TABLE signal_events ADD COLUMN xact_id BIGINT;
ALTER TABLE signal_events ALTER COLUMN xact_id SET DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX signal_events_xact_idx ON signal_events (xact_id);
