-- Amounts can no longer be negative; and quantities must be positive.
SET lock_timeout = '3s';

ALTER TABLE order_lines ADD CONSTRAINT order_lines_amount_check CHECK (amount_cents >= 0);

BEGIN;
ALTER TABLE order_lines
    ADD CONSTRAINT order_lines_quantity_check CHECK (quantity > 0) NOT VALID;
-- Validated in the same transaction: the ADD's ACCESS EXCLUSIVE is still held during the scan.
ALTER TABLE order_lines VALIDATE CONSTRAINT order_lines_quantity_check;
COMMIT;
