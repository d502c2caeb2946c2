--
-- Custom state/database change combination (atomic = False, AddIndexConcurrently)
--
CREATE INDEX CONCURRENTLY "shop_order_placed_at_idx" ON "shop_order" ("placed_at");
--
-- Alter field customer on order (db_constraint=False for the split of auth)
--
SET CONSTRAINTS "shop_order_customer_id_9e3f2c1a_fk_auth_user_id" IMMEDIATE; ALTER TABLE "shop_order" DROP CONSTRAINT "shop_order_customer_id_9e3f2c1a_fk_auth_user_id";
