-- The legacy flag was replaced by the plans table.
SET lock_timeout = '3s';

ALTER TABLE accounts DROP COLUMN IF EXISTS is_premium;
