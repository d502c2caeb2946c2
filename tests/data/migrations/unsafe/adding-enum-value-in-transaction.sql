-- Alembic-style: the new status is added and used in the same transaction.
BEGIN;
ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded';
UPDATE orders SET status = 'refunded' WHERE refunded_at IS NOT NULL;
COMMIT;
