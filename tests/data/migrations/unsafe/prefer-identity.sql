CREATE TABLE IF NOT EXISTS webhooks (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL,
    url text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
