-- Give every order a public identifier for the new customer-facing URLs.
SET lock_timeout = '3s';

ALTER TABLE orders
    ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();
