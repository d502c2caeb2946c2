-- lint-options: require_idempotent=true
-- Applied by the API at every start (no migrations table): everything must be re-runnable.
SET lock_timeout = '5s';

CREATE SCHEMA IF NOT EXISTS app;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'ticket_priority') THEN
        CREATE TYPE app.ticket_priority AS ENUM ('low', 'normal', 'high', 'urgent');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS app.tickets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject text NOT NULL,
    priority app.ticket_priority NOT NULL DEFAULT 'normal',
    opened_at timestamptz NOT NULL DEFAULT now(),
    closed_at timestamptz
);

ALTER TABLE app.tickets ADD COLUMN IF NOT EXISTS assignee_id bigint;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.table_constraints
        WHERE constraint_schema = 'app' AND constraint_name = 'tickets_closed_after_opened'
    ) THEN
        ALTER TABLE app.tickets
            ADD CONSTRAINT tickets_closed_after_opened
            CHECK (closed_at IS NULL OR closed_at >= opened_at) NOT VALID;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS tickets_open_idx ON app.tickets (opened_at) WHERE closed_at IS NULL;

CREATE OR REPLACE VIEW app.open_tickets AS
    SELECT id, subject, priority, opened_at FROM app.tickets WHERE closed_at IS NULL;
