BEGIN;
--
-- Rename field name on product to title
--
ALTER TABLE "shop_product" RENAME COLUMN "name" TO "title";
--
-- Alter field price on product
--
ALTER TABLE "shop_product" ALTER COLUMN "price" TYPE numeric(12, 2);
--
-- Alter field quantity on orderline
--
ALTER TABLE "shop_orderline" ALTER COLUMN "quantity" TYPE bigint USING "quantity"::bigint;
COMMIT;
