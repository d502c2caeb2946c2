ANALYZE audit_events;
