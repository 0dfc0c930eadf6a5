-- Every update of a signal changes `updated_at`, an indexed column, so none
-- is a HOT update: each one, like each insert, adds an entry to every index
-- on `signals`. Two of them only repeated the first column of a composite
-- index that serves the same lookups (an equality on the leading column of a
-- btree reads it as well as a single-column index does):
--   signals_normalised_ticker_idx  in  signals_normalised_ticker_created_idx
--   signals_current_status_idx     in  signals_status_updated_idx
-- Dropping them saves two index entries per signal written and per event
-- (whose signal update is one more row version). BENCHMARKS.md, "Fewer
-- signal indexes", has what it bought.
DROP INDEX signals_normalised_ticker_idx;
DROP INDEX signals_current_status_idx;
