-- Reclaim the space freed by the purge of old events.
VACUUM (FULL, ANALYZE) audit_events;
