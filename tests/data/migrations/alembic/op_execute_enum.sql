-- alembic upgrade --sql: op.execute("ALTER TYPE ... ADD VALUE ...") followed by a data
-- migration in the same revision, all inside Alembic's transaction.
BEGIN;

-- Running upgrade c0a5e8f13b92 -> 5e2d7a1f9c38

ALTER TYPE project_state ADD VALUE 'on_hold';

UPDATE projects SET state = 'on_hold' WHERE archived AND state = 'active';

UPDATE alembic_version SET version_num='5e2d7a1f9c38' WHERE alembic_version.version_num = 'c0a5e8f13b92';

COMMIT;
