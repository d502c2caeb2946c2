-- No BEGIN: CREATE INDEX CONCURRENTLY manages its own transactions.
SET lock_timeout = '3s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS payments_provider_ref_idx ON payments (provider_ref);
