VACUUM (ANALYZE) audit_events;
