-- Full-text search over what an event says: details, error info and the
-- broker's response. A stored generated column keeps the tsvector in step
-- with the row (no trigger to forget), indexed with GIN.
ALTER TABLE signal_events ADD COLUMN search TSVECTOR GENERATED ALWAYS AS (
    to_tsvector('english',
        coalesce(details, '') || ' ' || coalesce(error_info::text, '') || ' ' || coalesce(response_data, ''))
) STORED;
CREATE INDEX signal_events_search_idx ON signal_events USING GIN (search);
