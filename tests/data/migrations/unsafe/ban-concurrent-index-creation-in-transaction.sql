-- Written as "safe" but wrapped in a transaction: PostgreSQL refuses it.
BEGIN;
SET LOCAL lock_timeout = '3s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS payments_provider_ref_idx ON payments (provider_ref);
COMMIT;
