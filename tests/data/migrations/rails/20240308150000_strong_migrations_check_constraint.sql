-- The strong_migrations way: add_check_constraint ..., validate: false, then
-- validate_check_constraint in a second migration (both shown, one transaction each).
BEGIN;
SET LOCAL lock_timeout = '10s';
ALTER TABLE "users" ADD CONSTRAINT "users_age_positive" CHECK (age >= 0) NOT VALID;
INSERT INTO "schema_migrations" ("version") VALUES ('20240308150000') RETURNING "version";
COMMIT;
BEGIN;
SET LOCAL lock_timeout = '10s';
ALTER TABLE "users" VALIDATE CONSTRAINT "users_age_positive";
INSERT INTO "schema_migrations" ("version") VALUES ('20240308150100') RETURNING "version";
COMMIT;
