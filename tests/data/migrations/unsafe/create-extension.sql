-- Fuzzy search on product names.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX CONCURRENTLY IF NOT EXISTS products_name_trgm_idx
    ON products USING gin (name gin_trgm_ops);
