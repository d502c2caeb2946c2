-- PostgreSQL 14+: SHARE UPDATE EXCLUSIVE on the parent, reads and writes go on. Runs outside
-- a transaction block (the migration is marked non-transactional).
ALTER TABLE events DETACH PARTITION events_2023_01 CONCURRENTLY;
