-- Tie invoices to the account that owns them.
SET lock_timeout = '3s';

ALTER TABLE invoices
    ADD CONSTRAINT invoices_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE RESTRICT;
