ALTER TABLE signals DROP COLUMN processing_starts, DROP COLUMN forwarding_starts;
