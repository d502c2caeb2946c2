-- Backfill the new column in batches so no transaction holds row locks for long.
SET lock_timeout = '3s';

ALTER TABLE orders ADD COLUMN IF NOT EXISTS total_cents_big bigint;

DO $$
DECLARE
    last_id bigint := 0;
    batch_max bigint;
BEGIN
    LOOP
        SELECT max(id) INTO batch_max
        FROM (SELECT id FROM orders WHERE id > last_id ORDER BY id LIMIT 5000) AS batch;
        EXIT WHEN batch_max IS NULL;
        UPDATE orders SET total_cents_big = total_cents
        WHERE id > last_id AND id <= batch_max AND total_cents_big IS NULL;
        last_id := batch_max;
        COMMIT;
    END LOOP;
END
$$;
