-- rails db:migrate, transcribed from the log:
--   add_reference :comments, :article, foreign_key: true, index: true
BEGIN;
ALTER TABLE "comments" ADD "article_id" bigint;
CREATE INDEX "index_comments_on_article_id" ON "comments" ("article_id");
ALTER TABLE "comments" ADD CONSTRAINT "fk_rails_3bf61a60d3"
FOREIGN KEY ("article_id")
  REFERENCES "articles" ("id")
;
INSERT INTO "schema_migrations" ("version") VALUES ('20240305101500') RETURNING "version";
COMMIT;
