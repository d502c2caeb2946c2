-- The reporting warehouse moved to its own database.
DROP SCHEMA IF EXISTS reporting CASCADE;
