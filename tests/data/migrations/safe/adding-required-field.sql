-- A NOT NULL column with a constant default: existing rows get 'free' from the catalog.
SET lock_timeout = '3s';

ALTER TABLE accounts ADD COLUMN billing_plan text NOT NULL DEFAULT 'free';
