DELETE FROM partman.part_config WHERE parent_table = 'public.signal_events';
DROP TABLE IF EXISTS partman.template_public_signal_events;
DROP TABLE signal_event_ids;
DROP TABLE signal_events;
DROP TABLE signals;
DROP TYPE signal_location;
DROP TYPE signal_status;
DROP EXTENSION IF EXISTS pg_partman;
DROP SCHEMA IF EXISTS partman;
