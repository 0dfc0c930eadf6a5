DROP TABLE signal_error_summary;
