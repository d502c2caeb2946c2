-- Order totals overflowed int4 for a few enterprise customers.
SET lock_timeout = '3s';

ALTER TABLE orders ALTER COLUMN total_cents TYPE bigint;
