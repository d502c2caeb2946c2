-- Build the unique index online, then attach it: the constraint is a catalog change.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS subscriptions_account_product_key
    ON subscriptions (account_id, product_id);

SET lock_timeout = '3s';
ALTER TABLE subscriptions
    ADD CONSTRAINT subscriptions_account_product_key
    UNIQUE USING INDEX subscriptions_account_product_key;
