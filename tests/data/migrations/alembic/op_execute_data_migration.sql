-- op.execute() data migration with op.drop_column at the end.
BEGIN;

-- Running upgrade 9a0b1c2d3e4f -> 1d2c3b4a5f60

SET LOCAL lock_timeout = '4s';

UPDATE projects SET slug = lower(regexp_replace(name, '[^a-zA-Z0-9]+', '-', 'g')) WHERE slug IS NULL;

ALTER TABLE projects DROP COLUMN legacy_code;

UPDATE alembic_version SET version_num='1d2c3b4a5f60' WHERE alembic_version.version_num = '9a0b1c2d3e4f';

COMMIT;
