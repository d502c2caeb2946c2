-- Speed up the "recent orders" page.
CREATE INDEX orders_account_id_created_at_idx ON orders (account_id, created_at DESC);
