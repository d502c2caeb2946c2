-- Renaming indexes and constraints does not touch what queries name.
SET lock_timeout = '3s';

ALTER INDEX customers_pkey RENAME TO accounts_pkey;
ALTER TABLE customers RENAME CONSTRAINT customers_email_key TO accounts_email_key;
