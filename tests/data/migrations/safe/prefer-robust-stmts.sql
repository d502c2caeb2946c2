-- lint-options: require_idempotent=true
-- Run by the API at every start-up: every statement is a no-op the second time.
SET lock_timeout = '3s';

CREATE TABLE IF NOT EXISTS feature_flags (
    name text PRIMARY KEY,
    enabled boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE feature_flags ADD COLUMN IF NOT EXISTS rollout_percent integer;

CREATE INDEX CONCURRENTLY IF NOT EXISTS feature_flags_enabled_idx ON feature_flags (enabled);

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'feature_flags_rollout_percent_check'
    ) THEN
        ALTER TABLE feature_flags
            ADD CONSTRAINT feature_flags_rollout_percent_check
            CHECK (rollout_percent BETWEEN 0 AND 100) NOT VALID;
    END IF;
END
$$;

ALTER TABLE feature_flags VALIDATE CONSTRAINT feature_flags_rollout_percent_check;
