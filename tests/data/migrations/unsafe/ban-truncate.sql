-- Start the event log from scratch after the schema change.
SET lock_timeout = '3s';

TRUNCATE TABLE audit_events;
