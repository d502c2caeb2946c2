-- NOT VALID takes no lock on the tables using the domain and scans nothing: new and updated
-- values are checked from now on. It is not validated here: ALTER DOMAIN ... VALIDATE
-- CONSTRAINT would scan them under SHARE, blocking writes (unlike ALTER TABLE's).
ALTER DOMAIN email_address
    ADD CONSTRAINT email_address_has_at CHECK (VALUE LIKE '%@%') NOT VALID;
