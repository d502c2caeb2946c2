BEGIN;
--
-- Alter field status on order
--
CREATE INDEX "shop_order_status_6b1d3a9c" ON "shop_order" ("status");
CREATE INDEX "shop_order_status_6b1d3a9c_like" ON "shop_order" ("status" varchar_pattern_ops);
COMMIT;
