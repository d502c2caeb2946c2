-- Deliveries seen and runs. IF NOT EXISTS throughout: databases created before the schema
-- was versioned already hold these tables, and adopt them unchanged.
CREATE TABLE IF NOT EXISTS gatekeeper.deliveries (
    id text PRIMARY KEY,
    event text NOT NULL,
    action text,
    received_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    detail text NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS gatekeeper.runs (
    id bigserial PRIMARY KEY,
    delivery_id text REFERENCES gatekeeper.deliveries (id),
    repository text NOT NULL,
    installation_id bigint,
    pr_number int,
    head_sha text NOT NULL,
    target jsonb NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    superseded_by text,
    decision text,
    risk text,
    detail text NOT NULL DEFAULT '',
    check_run_id bigint,
    verdict jsonb,
    report text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
-- Dispatch mode: the Actions run doing the work, and when it must have reported back.
ALTER TABLE gatekeeper.runs ADD COLUMN IF NOT EXISTS workflow_run_id bigint;
ALTER TABLE gatekeeper.runs ADD COLUMN IF NOT EXISTS deadline timestamptz;
CREATE INDEX IF NOT EXISTS runs_pr ON gatekeeper.runs (repository, pr_number, id);
CREATE INDEX IF NOT EXISTS runs_state ON gatekeeper.runs (state);
