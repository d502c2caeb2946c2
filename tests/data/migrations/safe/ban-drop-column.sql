-- First step of removing a column: stop requiring it, so the new release can stop writing it.
SET lock_timeout = '3s';

ALTER TABLE accounts ALTER COLUMN is_premium DROP NOT NULL;
ALTER TABLE accounts ALTER COLUMN is_premium DROP DEFAULT;
