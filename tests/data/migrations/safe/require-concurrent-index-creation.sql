-- Run outside a transaction (the migration is marked non-transactional).
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_account_id_created_at_idx
    ON orders (account_id, created_at DESC);
