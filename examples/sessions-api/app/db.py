"""Database connections and the start-up migrations.

Like the Go original's `Migrate()`, the schema is plain SQL run in order at every start-up,
so every statement must be safe to run again: `IF NOT EXISTS`, `ON CONFLICT DO NOTHING`,
and `DO $$ ... $$` blocks that look in information_schema before altering a table. They run
in one transaction, so a failing statement leaves the schema as it was.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

Connection = psycopg.Connection[dict[str, Any]]

MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS templates (
        id SERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT 'general',
        image TEXT NOT NULL,
        tags TEXT[] NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS agents (
        id TEXT PRIMARY KEY,
        platform TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'online',
        last_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        template TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        agent_id TEXT REFERENCES agents(id),
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_sessions_user_id ON sessions(user_id)",
    # P1-SCHEMA-001: the agent code routes sessions by cluster.
    """
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
            WHERE table_name='agents' AND column_name='cluster_id') THEN
            ALTER TABLE agents ADD COLUMN cluster_id TEXT;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
            WHERE table_name='agents' AND column_name='cluster_name') THEN
            ALTER TABLE agents ADD COLUMN cluster_name TEXT;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
            WHERE table_name='sessions' AND column_name='cluster_id') THEN
            ALTER TABLE sessions ADD COLUMN cluster_id TEXT;
        END IF;
    END $$;
    """,
    """
    INSERT INTO templates (name, display_name, category, image, tags) VALUES
        ('firefox-browser', 'Firefox Web Browser', 'browsers',
         'lscr.io/linuxserver/firefox:latest', '{browser,web}'),
        ('vscode', 'Visual Studio Code', 'development',
         'lscr.io/linuxserver/code-server:latest', '{development,editor}'),
        ('ubuntu-desktop', 'Ubuntu Desktop', 'desktops',
         'lscr.io/linuxserver/webtop:ubuntu-xfce', '{desktop,linux}')
    ON CONFLICT (name) DO NOTHING
    """,
    """
    INSERT INTO agents (id, platform, status) VALUES ('k8s-prod-cluster', 'kubernetes', 'online')
    ON CONFLICT (id) DO NOTHING
    """,
    """
    UPDATE agents SET cluster_id = 'prod-us-east-1', cluster_name = 'Production US East'
    WHERE id = 'k8s-prod-cluster' AND cluster_id IS NULL
    """,
]


def connect(url: str) -> Connection:
    """A fresh autocommit connection: one per request keeps the demo free of pool settings."""
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=5)


def migrate(url: str) -> None:
    with connect(url) as conn, conn.transaction():
        for statement in MIGRATIONS:
            conn.execute(statement)


def error_message(exc: psycopg.Error) -> str:
    """The server's one-line message (`column "tags" ... does not exist`), without LINE/caret."""
    return exc.diag.message_primary or str(exc).splitlines()[0]
