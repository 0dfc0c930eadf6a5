-- Retention with archival (audit-admin retention run).
--
-- retention_policy: how long each kind of data stays in the live tables, in
-- days; NULL keeps it forever. `audit-admin retention run` reads it (flags
-- override it for one run). Raw events leave by whole day partitions, which
-- are archived and verified before they are dropped; signals leave with the
-- day of their latest event, in small batches.
CREATE TABLE retention_policy (
    kind       TEXT PRIMARY KEY
               CHECK (kind IN ('raw_events', 'signals', 'minute_rollups', 'hour_rollups', 'day_rollups')),
    keep_days  INTEGER CHECK (keep_days >= 1),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO retention_policy (kind, keep_days) VALUES
    ('raw_events', 90),
    ('signals', 90),
    ('minute_rollups', 30),
    ('hour_rollups', 365),
    ('day_rollups', NULL);

-- The oldest instant each kind still holds completely. The rollup refresher
-- never recomputes a bucket older than the newest of these: the raw events
-- (or finer rollups) it would be recomputed from are gone, and the rollup
-- kept is the only correct figure left.
CREATE TABLE retention_horizon (
    kind    TEXT PRIMARY KEY REFERENCES retention_policy (kind),
    horizon TIMESTAMPTZ NOT NULL
);

-- Every day whose events were archived (and dropped), with where its
-- archive lives; `signals_purged_at` once the signals that ended that day
-- left too.
CREATE TABLE archived_days (
    day               DATE PRIMARY KEY,
    location          TEXT NOT NULL,
    events            BIGINT NOT NULL,
    signals           BIGINT NOT NULL,
    events_sha256     TEXT NOT NULL,
    archived_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    signals_purged_at TIMESTAMPTZ
);
