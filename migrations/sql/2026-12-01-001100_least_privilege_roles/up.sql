-- Least-privilege group roles. Run by the role that owns the schema (the
-- migration user; it needs CREATEROLE). The roles are NOLOGIN groups:
-- operators create login users and GRANT one of them, e.g.
--   CREATE ROLE writer_svc LOGIN PASSWORD '…' IN ROLE audit_writer;
-- Roles are cluster-wide, so they are created once and reused by every
-- database of the cluster; privileges are per database.
--
--   audit_reader  SELECT only (the reader service, dashboards).
--   audit_writer  what the write path and its periodic jobs need, no more:
--                 signals INSERT/UPDATE (state, tags) but no DELETE;
--                 signal_events and their id claims INSERT only, so the audit
--                 trail is append-only for it; the derived rollup tables it
--                 recomputes. No TRUNCATE, no DDL (it owns nothing).
--   audit_admin   maintenance and retention: everything the writer may do
--                 plus DELETE on signals and events (purges, retention).
--                 Still no DDL: schema changes are the owner's, through
--                 migrations.
--
-- pg_partman maintenance (creating partitions ahead, dropping expired ones)
-- and REFRESH MATERIALIZED VIEW need ownership, which no service role has:
-- the two SECURITY DEFINER functions below do exactly that, with the
-- owner's rights, for the writer's and admin's periodic jobs.
DO $$
DECLARE
    r TEXT;
BEGIN
    FOREACH r IN ARRAY ARRAY['audit_reader', 'audit_writer', 'audit_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA public TO audit_reader, audit_writer, audit_admin;

-- Readers: every table and view (the replica has the same grants).
GRANT SELECT ON signals, signal_events, signal_event_ids, signal_metrics_summary,
    signal_error_summary, rollup_dirty, rollup_state, matview_refreshes,
    mv_daily_ticker_activity, mv_hourly_stage_latencies, mv_hourly_stage_latencies_by_ticker
    TO audit_reader, audit_writer, audit_admin;

-- Writers: append events, create and update signals, recompute rollups.
GRANT INSERT, UPDATE ON signals TO audit_writer, audit_admin;
GRANT INSERT ON signal_events, signal_event_ids TO audit_writer, audit_admin;
GRANT USAGE ON SEQUENCE signal_events_sequence_seq, signal_metrics_summary_metric_id_seq
    TO audit_writer, audit_admin;
GRANT INSERT, UPDATE, DELETE ON rollup_dirty, signal_metrics_summary, signal_error_summary,
    rollup_state, matview_refreshes TO audit_writer, audit_admin;

-- Admins: retention and purges.
GRANT DELETE ON signals, signal_events, signal_event_ids TO audit_admin;

-- pg_partman maintenance of signal_events with the owner's rights.
CREATE FUNCTION audit_maintain_partitions() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM partman.run_maintenance(p_parent_table := 'public.signal_events');
END
$$;

-- REFRESH MATERIALIZED VIEW CONCURRENTLY of one of this schema's views,
-- with the owner's rights; any other name is refused.
CREATE FUNCTION audit_refresh_materialized_view(view_name TEXT) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_matviews WHERE schemaname = 'public' AND matviewname = view_name) THEN
        RAISE EXCEPTION 'no materialized view %', view_name USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY public.%I', view_name);
END
$$;

REVOKE ALL ON FUNCTION audit_maintain_partitions(), audit_refresh_materialized_view(TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_maintain_partitions(), audit_refresh_materialized_view(TEXT)
    TO audit_writer, audit_admin;
