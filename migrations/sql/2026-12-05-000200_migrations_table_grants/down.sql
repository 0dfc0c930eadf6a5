REVOKE SELECT ON __diesel_schema_migrations FROM audit_reader, audit_writer, audit_admin;
