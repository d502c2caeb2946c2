CREATE TABLE IF NOT EXISTS maintenance_windows (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    starts_at timestamp NOT NULL,
    ends_at timestamp NOT NULL,
    note text
);
