-- One subscription per account and product.
SET lock_timeout = '3s';

ALTER TABLE subscriptions
    ADD CONSTRAINT subscriptions_account_product_key UNIQUE (account_id, product_id);
