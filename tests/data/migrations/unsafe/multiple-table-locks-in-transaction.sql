-- Soft delete for accounts and their users, in one go.
BEGIN;
SET LOCAL lock_timeout = '3s';
ALTER TABLE accounts ADD COLUMN deleted_at timestamptz;
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
COMMIT;
