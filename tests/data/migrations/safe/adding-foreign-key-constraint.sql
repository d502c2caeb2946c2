SET lock_timeout = '3s';

ALTER TABLE invoices
    ADD CONSTRAINT invoices_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE RESTRICT NOT VALID;

-- Separate transaction: SHARE UPDATE EXCLUSIVE, reads and writes go on during the scan.
ALTER TABLE invoices VALIDATE CONSTRAINT invoices_account_id_fkey;
