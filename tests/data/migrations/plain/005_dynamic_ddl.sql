-- Add a tenant column to every tenant-scoped table, with dynamic SQL.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS %I uuid', 'invoices', 'tenant_id');
    EXECUTE 'CREATE INDEX IF NOT EXISTS invoices_tenant_id_idx ON invoices (tenant_id)';
END
$$;
