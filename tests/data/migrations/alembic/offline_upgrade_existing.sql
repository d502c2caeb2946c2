BEGIN;

-- Running upgrade 8d4e0b6a2c55 -> b71f93c0e2d4

ALTER TABLE projects ADD COLUMN owner_id BIGINT;

ALTER TABLE projects ADD CONSTRAINT fk_projects_owner_id_users FOREIGN KEY(owner_id) REFERENCES users (id);

CREATE INDEX ix_projects_owner_id ON projects (owner_id);

UPDATE alembic_version SET version_num='b71f93c0e2d4' WHERE alembic_version.version_num = '8d4e0b6a2c55';

-- Running upgrade b71f93c0e2d4 -> c0a5e8f13b92

ALTER TABLE projects ALTER COLUMN name TYPE VARCHAR(120);

ALTER TABLE projects ALTER COLUMN archived DROP DEFAULT;

UPDATE alembic_version SET version_num='c0a5e8f13b92' WHERE alembic_version.version_num = 'b71f93c0e2d4';

COMMIT;
