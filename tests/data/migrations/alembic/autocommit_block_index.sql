-- op.get_context().autocommit_block(): COMMIT, the concurrent statements, BEGIN again.
BEGIN;

-- Running upgrade 5e2d7a1f9c38 -> 9a0b1c2d3e4f

SET LOCAL lock_timeout = '4s';

ALTER TABLE projects ADD COLUMN slug TEXT;

COMMIT;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_projects_tenant_slug ON projects (tenant_id, slug);

BEGIN;

UPDATE alembic_version SET version_num='9a0b1c2d3e4f' WHERE alembic_version.version_num = '5e2d7a1f9c38';

COMMIT;
