CREATE INDEX signals_normalised_ticker_idx ON signals (normalised_ticker);
CREATE INDEX signals_current_status_idx ON signals (current_status);
