-- Django 5's db_default keeps the default in the database, so the running release's INSERTs
-- still work; a nullable column's default can go at once (missing values become NULL).
SET lock_timeout = '3s';

ALTER TABLE shop_order ADD COLUMN is_priority boolean DEFAULT false NOT NULL;

ALTER TABLE shop_order ADD COLUMN priority_note text DEFAULT '';
ALTER TABLE shop_order ALTER COLUMN priority_note DROP DEFAULT;
