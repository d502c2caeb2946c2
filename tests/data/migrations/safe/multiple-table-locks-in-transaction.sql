-- One table per transaction.
BEGIN;
SET LOCAL lock_timeout = '3s';
ALTER TABLE accounts ADD COLUMN deleted_at timestamptz;
COMMIT;

BEGIN;
SET LOCAL lock_timeout = '3s';
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
COMMIT;
