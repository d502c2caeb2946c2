-- Contract step after the users.name -> full_name move: three releases later.
SET lock_timeout = '3s';

BEGIN;
DROP TRIGGER IF EXISTS users_copy_name ON users;
DROP FUNCTION IF EXISTS users_copy_name();
ALTER TABLE users DROP COLUMN name;
COMMIT;

DROP INDEX CONCURRENTLY IF EXISTS users_name_idx;
