"""The service's own tables: deliveries seen and runs, in PostgreSQL.

A delivery is written before the webhook answers, so a redelivery is recognised and work
accepted is never lost to a crash; a run's row is the truth about which head SHA of a pull
request is current, so a superseded run cannot publish over a newer one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS gatekeeper;
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
"""

CONNECT_TIMEOUT = 10.0  # seconds to wait for a pooled connection before giving up

# Runs in these states may still publish; all others are final.
ACTIVE = ("queued", "running", "waiting", "dispatched")


class Store:
    def __init__(self, database_url: str, max_connections: int = 10):
        self.database_url = database_url
        self.max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection: opening one per delivery was most of the webhook's answer
        time (bench/webhook.py). Checked before use, so a restarted server is survived."""
        with self._connections().connection(timeout=CONNECT_TIMEOUT) as conn:
            yield conn

    def _connections(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.database_url,
                    kwargs={"row_factory": dict_row, "autocommit": True},
                    min_size=1,
                    max_size=self.max_connections,
                    check=ConnectionPool.check_connection,
                    open=True,
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def migrate(self) -> None:
        """Safe to re-run: the schema is created with IF NOT EXISTS throughout."""
        with self.connect() as conn:
            conn.execute(SCHEMA)

    def record_delivery(
        self, delivery_id: str, event: str, action: str | None, outcome: str, detail: str = ""
    ) -> bool:
        """False when this delivery id was seen before (a redelivery)."""
        with self.connect() as conn:
            row = conn.execute(
                "INSERT INTO gatekeeper.deliveries (id, event, action, outcome, detail)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                (delivery_id, event, action, outcome, detail),
            ).fetchone()
        return row is not None

    def accept(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        target: dict[str, Any],
        head_sha: str,
    ) -> int | None:
        """Record the delivery and queue its run in one transaction; None for a redelivery.

        Older active runs of the same pull request are marked superseded here, so whichever
        of them finishes later knows not to publish its verdict.
        """
        with self.connect() as conn, conn.transaction():
            seen = conn.execute(
                "INSERT INTO gatekeeper.deliveries (id, event, action, outcome)"
                " VALUES (%s, %s, %s, 'queued') ON CONFLICT (id) DO NOTHING RETURNING id",
                (delivery_id, event, action),
            ).fetchone()
            if seen is None:
                return None
            run = conn.execute(
                "INSERT INTO gatekeeper.runs"
                " (delivery_id, repository, installation_id, pr_number, head_sha, target)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    delivery_id,
                    target["repository"],
                    target.get("installation_id"),
                    target.get("pr_number"),
                    head_sha,
                    Jsonb(target),
                ),
            ).fetchone()
            assert run is not None
            if head_sha:
                _supersede_older(
                    conn, run["id"], target["repository"], target.get("pr_number"), head_sha
                )
            return int(run["id"])

    def resolve(self, run_id: int, target: dict[str, Any], approved: bool) -> None:
        """A comment's run now knows its head SHA: record it and supersede older runs."""
        with self.connect() as conn, conn.transaction():
            conn.execute(
                "UPDATE gatekeeper.runs SET target = %s, head_sha = %s WHERE id = %s",
                (Jsonb({**target, "approved": approved}), target["head_sha"], run_id),
            )
            _supersede_older(
                conn, run_id, target["repository"], target.get("pr_number"), target["head_sha"]
            )

    def __repr__(self) -> str:
        return "Store(...)"  # the URL may carry a password

    def run(self, run_id: int) -> dict[str, Any]:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM gatekeeper.runs WHERE id = %s", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return row

    def update(self, run_id: int, **fields: Any) -> None:
        columns = ", ".join(f"{name} = %({name})s" for name in fields)
        values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in fields.items()}
        with self.connect() as conn:
            conn.execute(
                f"UPDATE gatekeeper.runs SET {columns} WHERE id = %(id)s", {**values, "id": run_id}
            )

    def claim(self, run_id: int) -> dict[str, Any] | None:
        """Move a queued run to running; None if it was already taken or superseded."""
        with self.connect() as conn:
            return conn.execute(
                "UPDATE gatekeeper.runs SET state = 'running', started_at = now()"
                " WHERE id = %s AND state = 'queued' RETURNING *",
                (run_id,),
            ).fetchone()

    def superseding(self, run_id: int) -> str | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT superseded_by FROM gatekeeper.runs WHERE id = %s", (run_id,)
            ).fetchone()
        return row["superseded_by"] if row else None

    def queued(self) -> list[int]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id FROM gatekeeper.runs WHERE state = 'queued' ORDER BY id"
            ).fetchall()
        return [r["id"] for r in rows]

    def orphaned(self) -> list[dict[str, Any]]:
        """Runs a dead process left running: their statuses are still pending on GitHub."""
        with self.connect() as conn:
            return conn.execute(
                "SELECT * FROM gatekeeper.runs WHERE state = 'running' ORDER BY id"
            ).fetchall()

    def dispatched(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            return conn.execute(
                "SELECT * FROM gatekeeper.runs WHERE state = 'dispatched' ORDER BY id"
            ).fetchall()

    def delivery_ids(self, since: datetime) -> set[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id FROM gatekeeper.deliveries WHERE received_at >= %s", (since,)
            ).fetchall()
        return {r["id"] for r in rows}


def _supersede_older(
    conn: psycopg.Connection[Any], run_id: int, repository: str, pr: int | None, head_sha: str
) -> None:
    """Mark older active runs of the same pull request for another SHA as superseded."""
    if pr is None:
        return
    conn.execute(
        "UPDATE gatekeeper.runs SET superseded_by = %s"
        " WHERE repository = %s AND pr_number = %s AND id < %s"
        " AND head_sha <> %s AND superseded_by IS NULL AND state = ANY(%s)",
        (head_sha, repository, pr, run_id, head_sha, list(ACTIVE)),
    )
