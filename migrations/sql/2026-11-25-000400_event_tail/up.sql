-- StreamEvents finds recently committed events through recorded_at (set at
-- transaction start, so within one transaction's duration of its commit).
CREATE INDEX signal_events_recorded_idx ON signal_events (recorded_at);
