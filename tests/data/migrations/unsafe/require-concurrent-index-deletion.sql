-- The composite index (account_id, created_at) covers this one.
SET lock_timeout = '3s';

DROP INDEX IF EXISTS orders_account_id_idx;
