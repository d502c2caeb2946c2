-- The extension is created by an administrator; the migration only checks it is there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        RAISE EXCEPTION 'pg_trgm is missing: ask a DBA to CREATE EXTENSION pg_trgm';
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS products_name_trgm_idx
    ON products USING gin (name gin_trgm_ops);
