-- NOT NULL the online way: prove it with a validated CHECK first (PostgreSQL 12+ then skips
-- the scan under ACCESS EXCLUSIVE). Each statement runs in its own transaction.
SET lock_timeout = '3s';

ALTER TABLE users ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;
ALTER TABLE users ALTER COLUMN email SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_email_not_null;
