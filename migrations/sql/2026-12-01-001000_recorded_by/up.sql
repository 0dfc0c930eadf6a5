-- Who recorded each signal and event: the authenticated caller's name
-- (from its bearer token or client certificate). NULL for rows written
-- before authentication existed or with auth off. Adding a nullable column
-- without a default rewrites nothing, so this is instant on big tables; on
-- the partitioned signal_events it reaches every partition.
ALTER TABLE signals ADD COLUMN recorded_by TEXT;
ALTER TABLE signal_events ADD COLUMN recorded_by TEXT;
