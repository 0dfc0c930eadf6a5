-- The writer refuses to start against a schema newer than it knows, and
-- `audit-admin migrate status` lists the applied migrations: both read
-- diesel's bookkeeping table, as whatever role they run as. The service
-- roles may read it, never change it (only the owner migrates).
GRANT SELECT ON __diesel_schema_migrations TO audit_reader, audit_writer, audit_admin;
