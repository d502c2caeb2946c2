-- Constant and stable defaults are stored in the catalog (PostgreSQL 11+): no rewrite.
SET lock_timeout = '3s';

ALTER TABLE orders ADD COLUMN channel text NOT NULL DEFAULT 'web';
ALTER TABLE orders ADD COLUMN imported_at timestamptz DEFAULT now();
