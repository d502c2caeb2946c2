-- A scratch table created and dropped by the same migration is nobody else's.
CREATE TABLE import_batch (
    sku text PRIMARY KEY,
    price_cents bigint NOT NULL
);

INSERT INTO import_batch (sku, price_cents)
VALUES ('SKU-1', 1999), ('SKU-2', 2499);

UPDATE products p
SET price_cents = b.price_cents
FROM import_batch b
WHERE p.sku = b.sku;

DROP TABLE import_batch;
