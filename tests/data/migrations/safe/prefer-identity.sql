CREATE TABLE IF NOT EXISTS webhooks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL,
    url text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
