-- disable_ddl_transaction!
--   add_index :users, :email, unique: true, algorithm: :concurrently
SET lock_timeout = '5s';
CREATE UNIQUE INDEX CONCURRENTLY "index_users_on_email" ON "users" ("email");
INSERT INTO "schema_migrations" ("version") VALUES ('20240306113000') RETURNING "version";
