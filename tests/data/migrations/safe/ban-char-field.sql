CREATE TABLE IF NOT EXISTS currencies (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    name text NOT NULL,
    minor_units smallint NOT NULL DEFAULT 2
);
