SET lock_timeout = '3s';

ALTER TABLE customers RENAME TO accounts;
