-- The value is added on its own; it is used by a later migration.
ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'refunded' AFTER 'paid';
