ALTER TABLE signal_event_ids ADD CONSTRAINT signal_event_ids_signal_id_fkey
    FOREIGN KEY (signal_id) REFERENCES signals (signal_id) ON DELETE CASCADE;
