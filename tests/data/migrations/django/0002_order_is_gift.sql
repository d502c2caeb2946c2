BEGIN;
--
-- Add field is_gift to order
--
ALTER TABLE "shop_order" ADD COLUMN "is_gift" boolean DEFAULT false NOT NULL;
ALTER TABLE "shop_order" ALTER COLUMN "is_gift" DROP DEFAULT;
--
-- Add field gift_message to order
--
ALTER TABLE "shop_order" ADD COLUMN "gift_message" text DEFAULT '' NOT NULL;
ALTER TABLE "shop_order" ALTER COLUMN "gift_message" DROP DEFAULT;
COMMIT;
