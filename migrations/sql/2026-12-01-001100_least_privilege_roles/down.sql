DROP FUNCTION audit_refresh_materialized_view(TEXT);
DROP FUNCTION audit_maintain_partitions();
-- Revokes every privilege the roles hold in this database (they own
-- nothing). The roles themselves are cluster-wide and may serve other
-- databases, so they stay.
DROP OWNED BY audit_reader, audit_writer, audit_admin;
