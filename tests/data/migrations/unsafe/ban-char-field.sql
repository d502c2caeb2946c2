CREATE TABLE IF NOT EXISTS currencies (
    code char(3) PRIMARY KEY,
    name text NOT NULL,
    minor_units smallint NOT NULL DEFAULT 2
);
