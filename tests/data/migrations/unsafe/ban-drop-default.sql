-- What Django's AddField(BooleanField(default=False)) emits: the default only fills the existing
-- rows. Once it is dropped, the release still running (which does not know the column) fails on
-- every INSERT into shop_order.
SET lock_timeout = '3s';

ALTER TABLE shop_order ADD COLUMN is_priority boolean DEFAULT false NOT NULL;
ALTER TABLE shop_order ALTER COLUMN is_priority DROP DEFAULT;
