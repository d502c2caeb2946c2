-- Accounts must now belong to a billing plan.
SET lock_timeout = '3s';

ALTER TABLE accounts ADD COLUMN billing_plan text NOT NULL;
