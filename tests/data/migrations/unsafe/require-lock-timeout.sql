-- Remember where a signup came from.
ALTER TABLE accounts ADD COLUMN signup_source text;
