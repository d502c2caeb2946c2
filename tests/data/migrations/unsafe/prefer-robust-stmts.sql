-- lint-options: require_idempotent=true
-- Run by the API at every start-up.
CREATE TABLE IF NOT EXISTS feature_flags (
    name text PRIMARY KEY,
    enabled boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE feature_flags ADD COLUMN rollout_percent integer;

CREATE INDEX feature_flags_enabled_idx ON feature_flags (enabled);
