SET lock_timeout = '3s';

BEGIN;
ALTER TABLE order_lines
    ADD CONSTRAINT order_lines_amount_check CHECK (amount_cents >= 0) NOT VALID;
COMMIT;

BEGIN;
ALTER TABLE order_lines VALIDATE CONSTRAINT order_lines_amount_check;
COMMIT;
