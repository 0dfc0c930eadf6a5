DROP TABLE archived_days;
DROP TABLE retention_horizon;
DROP TABLE retention_policy;
