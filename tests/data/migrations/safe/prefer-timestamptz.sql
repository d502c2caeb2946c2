CREATE TABLE IF NOT EXISTS maintenance_windows (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    -- A calendar day, not an instant: date is right here.
    announced_on date,
    note text
);
