-- Physically order events by time for faster range scans.
SET lock_timeout = '3s';

CLUSTER audit_events USING audit_events_created_at_idx;
