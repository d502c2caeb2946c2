BEGIN;
--
-- Alter unique_together for orderline (1 constraint(s))
--
ALTER TABLE "shop_orderline" ADD CONSTRAINT "shop_orderline_order_id_product_id_2c4e6f8a_uniq" UNIQUE ("order_id", "product_id");
--
-- Remove field is_active from product
--
ALTER TABLE "shop_product" DROP COLUMN "is_active" CASCADE;
COMMIT;
