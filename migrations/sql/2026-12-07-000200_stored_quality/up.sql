-- CheckDataQuality over an hour of a busy day walked every event of the hour
-- (4 s at 10 M events a day, BENCHMARKS.md). The writer's quality job now
-- checks each minute of events once after it changes and stores what it
-- found; the RPC answers from the stored minutes and checks live only the
-- minutes not verified since their last change (the minute in progress,
-- late events not yet checked, the partial minutes at the range's ends).
--
-- A minute is dirty from the rollup refresh that rewrote its rollups (the
-- refresher appends its minutes here in the same transaction that takes
-- its keys, so a change is never lost between the two) until the quality
-- job checks it again. Unlike rollup_dirty, one row per minute: the job
-- takes rows with DELETE … RETURNING, and a refresher appending a minute
-- the job is taking waits for the job's commit and then queues it again.
CREATE TABLE quality_dirty (
    bucket_minute TIMESTAMPTZ PRIMARY KEY
);

-- Minutes checked, and when (the check's snapshot reflects every event of
-- the minute committed by then).
CREATE TABLE quality_minutes (
    bucket_minute TIMESTAMPTZ PRIMARY KEY,
    checked_at    TIMESTAMPTZ NOT NULL
);

-- What each checked minute's check found. A finding about a signal is
-- filed under every minute the signal was touched in (an event stamped in
-- it, or its updated_at), so the findings of any set of whole minutes are
-- those of one check over them.
CREATE TABLE quality_findings (
    bucket_minute TIMESTAMPTZ NOT NULL REFERENCES quality_minutes ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('orphan_events', 'counter_mismatch', 'summary_mismatch')),
    id            TEXT NOT NULL,
    PRIMARY KEY (bucket_minute, kind, id)
);

-- Every minute already stored is unchecked: the job works through them,
-- newest first, a bounded number per run.
INSERT INTO quality_dirty (bucket_minute)
SELECT DISTINCT period_start FROM signal_metrics_summary WHERE period_type = 'minute';

GRANT SELECT ON quality_dirty, quality_minutes, quality_findings
    TO audit_reader, audit_writer, audit_admin;
GRANT INSERT, UPDATE, DELETE ON quality_dirty, quality_minutes, quality_findings
    TO audit_writer, audit_admin;
