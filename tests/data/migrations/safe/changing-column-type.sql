-- Expand step of int -> bigint: a new column kept in sync by a trigger, backfilled in batches
-- by a job; reads switch over in a later release.
SET lock_timeout = '3s';

ALTER TABLE orders ADD COLUMN total_cents_big bigint;

CREATE OR REPLACE FUNCTION orders_sync_total_cents() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.total_cents_big := NEW.total_cents;
    RETURN NEW;
END;
$$;

CREATE TRIGGER orders_sync_total_cents
    BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_sync_total_cents();
