-- change_column_null :users, :name, false
-- change_column_default :users, :locale, from: nil, to: "en"
-- change_column :users, :bio, :string, limit: 500
BEGIN;
ALTER TABLE "users" ALTER COLUMN "name" SET NOT NULL;
ALTER TABLE "users" ALTER COLUMN "locale" SET DEFAULT 'en';
ALTER TABLE "users" ALTER COLUMN "bio" TYPE character varying(500);
INSERT INTO "schema_migrations" ("version") VALUES ('20240307094500') RETURNING "version";
COMMIT;
