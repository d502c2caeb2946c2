SET lock_timeout = '3s';
SET statement_timeout = '30s';

ALTER TABLE accounts ADD COLUMN signup_source text;
