-- The retention tables came in a migration that ran before the roles
-- existed: give each role what it needs. The writer's rollup refresh reads
-- the horizons (a day whose raw data left is not recomputed); retention
-- itself runs as audit_admin.
GRANT SELECT ON retention_policy, retention_horizon, archived_days
    TO audit_reader, audit_writer, audit_admin;
GRANT INSERT, UPDATE, DELETE ON retention_policy, retention_horizon, archived_days
    TO audit_admin;
