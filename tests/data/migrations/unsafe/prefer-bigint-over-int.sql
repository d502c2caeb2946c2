CREATE TABLE IF NOT EXISTS page_views (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path text NOT NULL,
    viewed_at timestamptz NOT NULL DEFAULT now()
);
