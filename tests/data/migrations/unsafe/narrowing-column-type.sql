-- Squashed from two Django migrations: AddField(country_code), then AlterField(max_length=2).
SET lock_timeout = '3s';

ALTER TABLE addresses ADD COLUMN country_code varchar(64);
UPDATE addresses SET country_code = upper(substr(country, 1, 2)) WHERE country IS NOT NULL;
ALTER TABLE addresses ALTER COLUMN country_code TYPE varchar(2);
