DROP TABLE quality_findings;
DROP TABLE quality_minutes;
DROP TABLE quality_dirty;
