-- Squashed: AddField(country_code, max_length=2), then AlterField(max_length=3) for ISO alpha-3.
SET lock_timeout = '3s';

ALTER TABLE addresses ADD COLUMN country_code varchar(2);
ALTER TABLE addresses ALTER COLUMN country_code TYPE varchar(3);
