REVOKE INSERT, UPDATE, DELETE ON retention_policy, retention_horizon, archived_days
    FROM audit_admin;
REVOKE SELECT ON retention_policy, retention_horizon, archived_days
    FROM audit_reader, audit_writer, audit_admin;
