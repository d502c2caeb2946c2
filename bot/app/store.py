"""The service's own tables: deliveries seen and runs, in PostgreSQL.

A delivery is written before the webhook answers, so a redelivery is recognised and work
accepted is never lost to a crash; a run's row is the truth about which head SHA of a pull
request is current, so a superseded run cannot publish over a newer one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from procrastinate.schema import SchemaManager
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from bot.app.queue import SCHEMA_VERSION, Jobs, lane_lock, resource_lock

MIGRATIONS_DIR = Path(__file__).with_name("store_migrations")


@dataclass(frozen=True)
class Migration:
    """One step of the service's schema. Applied once, in order, each in its transaction."""

    version: int
    name: str
    sql: Callable[[], str]


def _ours(filename: str) -> Callable[[], str]:
    return lambda: (MIGRATIONS_DIR / filename).read_text()


MIGRATIONS = (
    Migration(1, "deliveries and runs", _ours("001_deliveries_and_runs.sql")),
    # procrastinate's own schema, as its documentation asks a migration tool to apply it.
    Migration(2, f"procrastinate {SCHEMA_VERSION} queue", SchemaManager.get_schema),
    Migration(3, "runs: job, attempts, resource, unposted", _ours("003_queue_columns.sql")),
)

# Serialises concurrent starters (serve and several workers) applying migrations.
_MIGRATION_LOCK = 0x6761746B  # "gatk"


CONNECT_TIMEOUT = 10.0  # seconds to wait for a pooled connection before giving up
# ...while GitHub waits for an answer: it gives a delivery 10 s, and a quick 503 lets the
# redelivery bring it back, where a late answer is a failed delivery all the same.
ANSWER_TIMEOUT = 3.0

# Runs in these states may still publish; all others are final. `waiting` waits for a
# maintainer's ok-to-test, `blocked` for a shared resource, `dispatched` for GitHub Actions.
ACTIVE = ("queued", "running", "waiting", "blocked", "dispatched")
# Runs in these states owe GitHub a verdict on the service's own clock: the watchdog's.
WATCHED = ("queued", "running", "blocked")


class Store:
    def __init__(self, database_url: str, max_connections: int = 10):
        self.database_url = database_url
        self.max_connections = max_connections
        self.jobs = Jobs()
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    @contextmanager
    def connect(
        self, timeout: float = CONNECT_TIMEOUT
    ) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection: opening one per delivery was most of the webhook's answer
        time (bench/webhook.py). Checked before use, so a restarted server is survived."""
        with self._connections().connection(timeout=timeout) as conn:
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

    def __repr__(self) -> str:
        return "Store(...)"  # the URL may carry a password

    # -- schema ------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns their versions. Safe to re-run
        and to run from several processes at once (an advisory lock serialises them)."""
        applied: list[int] = []
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE SCHEMA IF NOT EXISTS gatekeeper;"
                " CREATE TABLE IF NOT EXISTS gatekeeper.schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                r["version"]
                for r in conn.execute("SELECT version FROM gatekeeper.schema_migrations")
            }
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql())  # type: ignore[arg-type]
                    conn.execute(
                        "INSERT INTO gatekeeper.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration.version)
        return applied

    # -- deliveries and runs -----------------------------------------------------------------

    def record_delivery(
        self, delivery_id: str, event: str, action: str | None, outcome: str, detail: str = ""
    ) -> bool:
        """False when this delivery id was seen before (a redelivery)."""
        with self.connect(ANSWER_TIMEOUT) as conn:
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
        lanes: int = 1,
    ) -> int | None:
        """Record the delivery, its run and the run's job in one transaction; None for a
        redelivery. Older runs of the same pull request are superseded in it too. `lanes`:
        how many runs of one repository may validate at once (see bot.app.queue)."""
        with self.connect(ANSWER_TIMEOUT) as conn, conn.transaction():
            seen = conn.execute(
                "INSERT INTO gatekeeper.deliveries (id, event, action, outcome)"
                " VALUES (%s, %s, %s, 'queued') ON CONFLICT (id) DO NOTHING RETURNING id",
                (delivery_id, event, action),
            ).fetchone()
            if seen is None:
                return None
            if head_sha:
                _lock_pull_request(conn, target)
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
            run_id = int(run["id"])
            if head_sha:
                self._supersede_older(conn, run_id, target, head_sha)
            job_id = self.jobs.defer(conn, run_id, lane_lock(target["repository"], run_id, lanes))
            conn.execute("UPDATE gatekeeper.runs SET job_id = %s WHERE id = %s", (job_id, run_id))
            return run_id

    def resolve(self, run_id: int, target: dict[str, Any], approved: bool) -> bool:
        """A comment's run now knows its head SHA: record it and supersede older runs. False
        when a newer run of the pull request was accepted meanwhile (running or already
        ended: it validated the head this command was about): this one ends superseded, having
        posted nothing."""
        with self.connect() as conn, conn.transaction():
            _lock_pull_request(conn, target)
            newer = conn.execute(
                "SELECT head_sha FROM gatekeeper.runs WHERE repository = %s AND pr_number = %s"
                " AND id > %s AND state <> 'ignored' ORDER BY id DESC LIMIT 1",
                (target["repository"], target.get("pr_number"), run_id),
            ).fetchone()
            conn.execute(
                "UPDATE gatekeeper.runs SET target = %s, head_sha = %s WHERE id = %s",
                (Jsonb({**target, "approved": approved}), target["head_sha"], run_id),
            )
            if newer is not None:
                conn.execute(
                    "UPDATE gatekeeper.runs SET state = 'superseded', superseded_by = %s,"
                    " finished_at = now() WHERE id = %s",
                    (newer["head_sha"] or target["head_sha"], run_id),
                )
                return False
            self._supersede_older(conn, run_id, target, target["head_sha"])
            return True

    def adopt(self, run_id: int, target: dict[str, Any]) -> int | None:
        """A push's run now knows its open pull request (`target`). Returns the id of another
        run of that pull request at the same head SHA (its pull_request delivery's): this one
        then validates nothing, one commit gets one validation. Else None: the run becomes the
        pull request's, superseding its older runs as an accepted delivery would."""
        with self.connect() as conn, conn.transaction():
            _lock_pull_request(conn, target)
            other = conn.execute(
                "SELECT id FROM gatekeeper.runs WHERE repository = %s AND pr_number = %s"
                " AND head_sha = %s AND id <> %s AND state <> 'ignored' ORDER BY id DESC LIMIT 1",
                (target["repository"], target["pr_number"], target["head_sha"], run_id),
            ).fetchone()
            if other is not None:
                return int(other["id"])
            conn.execute(
                "UPDATE gatekeeper.runs SET target = %s, pr_number = %s WHERE id = %s",
                (Jsonb(target), target["pr_number"], run_id),
            )
            self._supersede_older(conn, run_id, target, target["head_sha"])
            return None

    def cancel_group(self, repository: str, head_sha: str, detail: str) -> list[int]:
        """End the active runs of the merge group whose head is `head_sha`, in `error` with
        `detail`, their final status owed (`post`, or the sweep, posts it: never left
        pending); running ones are asked to abort. Returns their ids."""
        with self.connect() as conn, conn.transaction():
            ended = conn.execute(
                "UPDATE gatekeeper.runs SET state = 'error', detail = %s, finished_at = now(),"
                " unposted = true, target = target || '{\"cancelled\": true}'::jsonb"
                " WHERE repository = %s AND head_sha = %s AND state = ANY(%s)"
                " AND (target ->> 'merge_group') = 'true' RETURNING id, job_id",
                (detail, repository, head_sha, list(ACTIVE)),
            ).fetchall()
            for row in ended:
                if row["job_id"] is not None:
                    self.jobs.cancel(conn, row["job_id"])
        return [int(row["id"]) for row in ended]

    def _supersede_older(
        self, conn: psycopg.Connection[Any], run_id: int, target: dict[str, Any], head_sha: str
    ) -> None:
        """Older runs of this pull request step aside for `run_id`: one head SHA of one pull
        request has one active run, that of the newest delivery.

        One that has not started, or waits for a resource or an ok-to-test, ends here and its
        job is cancelled: nothing final was posted for it (`waiting` and `blocked` ones posted
        `pending`, which the newer run's statuses replace for the same SHA and which a
        different SHA no longer shows on the pull request). A running one is marked and asked
        to abort: it posts `superseded` itself, never its verdict. A dispatched run of the same
        SHA is left alone: its workflow reports for that SHA itself.
        """
        pr = target.get("pr_number")
        if pr is None:
            return
        older = conn.execute(
            "UPDATE gatekeeper.runs SET superseded_by = %(sha)s,"
            " state = CASE WHEN state IN ('queued', 'waiting', 'blocked')"
            "   THEN 'superseded' ELSE state END,"
            " finished_at = CASE WHEN state IN ('queued', 'waiting', 'blocked')"
            "   THEN now() ELSE finished_at END"
            " WHERE repository = %(repo)s AND pr_number = %(pr)s AND id < %(id)s"
            " AND superseded_by IS NULL AND state = ANY(%(active)s)"
            " AND NOT (head_sha = %(sha)s AND state = 'dispatched')"
            " RETURNING job_id",
            {
                "sha": head_sha,
                "repo": target["repository"],
                "pr": pr,
                "id": run_id,
                "active": list(ACTIVE),
            },
        ).fetchall()
        for row in older:
            if row["job_id"] is not None:
                self.jobs.cancel(conn, row["job_id"])

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

    def note(self, run_id: int, detail: str) -> None:
        """Show what a running run is doing now. Only while it is active: the detail of an
        ended run is its end's reason, which a final status posted again must repeat."""
        with self.connect() as conn:
            conn.execute(
                "UPDATE gatekeeper.runs SET detail = %s WHERE id = %s AND state = ANY(%s)",
                (detail, run_id, list(ACTIVE)),
            )

    def claim(self, run_id: int, job_id: int | None) -> dict[str, Any] | None:
        """The run, now `running` under `job_id`; None if it has ended meanwhile.

        A run already `running` is taken again: its worker died, and procrastinate handed
        the job on (attempts counts how often, so a run that kills workers ends)."""
        with self.connect() as conn:
            return conn.execute(
                "UPDATE gatekeeper.runs SET state = 'running', attempts = attempts + 1,"
                " job_id = COALESCE(%s, job_id), started_at = COALESCE(started_at, now())"
                " WHERE id = %s AND state IN ('queued', 'running', 'blocked') RETURNING *",
                (job_id, run_id),
            ).fetchone()

    def finish(self, run_id: int, state: str, *, post: bool, **fields: Any) -> bool | None:
        """End an active run. None if it had ended already (the watchdog, a supersede): the
        caller must not publish. Else whether a final status is owed to GitHub: `post` asked,
        and the run knows its head SHA. `posting` settles the debt."""
        values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in fields.items()}
        columns = "".join(f", {name} = %({name})s" for name in fields)
        with self.connect() as conn:
            row = conn.execute(
                "UPDATE gatekeeper.runs SET state = %(state)s, finished_at = now(),"
                " unposted = %(post)s AND head_sha <> ''"
                " AND (target ->> 'kind') IS DISTINCT FROM 'needs-pull-request'"
                f"{columns} WHERE id = %(id)s AND state = ANY(%(active)s) RETURNING unposted",
                {**values, "state": state, "post": post, "id": run_id, "active": list(ACTIVE)},
            ).fetchone()
        return None if row is None else bool(row["unposted"])

    @contextmanager
    def posting(self, run_id: int) -> Iterator[bool]:
        """Hold the right to post `run_id`'s final status: True for one holder at a time while
        the status is unposted; it counts as posted when the block ends without an error."""
        with self.connect() as conn, conn.transaction():
            row = conn.execute(
                "SELECT id FROM gatekeeper.runs WHERE id = %s AND unposted FOR UPDATE SKIP LOCKED",
                (run_id,),
            ).fetchone()
            yield row is not None
            if row is not None:
                conn.execute("UPDATE gatekeeper.runs SET unposted = false WHERE id = %s", (run_id,))

    def requeue(self, run_id: int, detail: str) -> None:
        """A transient failure or a shutdown: the job is deferred again, the run waits."""
        with self.connect() as conn:
            conn.execute(
                "UPDATE gatekeeper.runs SET state = 'queued', detail = %s"
                " WHERE id = %s AND state = 'running'",
                (detail, run_id),
            )

    def block(self, run_id: int, resource: str) -> int:
        """Queue the run behind `resource`: a new job under its lock. Returns its place."""
        lock = resource_lock(resource)
        with self.connect() as conn, conn.transaction():
            # Runs joining the same line one at a time, so each counts those before it.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            job_id = self.jobs.defer(conn, run_id, lock)
            conn.execute(
                "UPDATE gatekeeper.runs SET state = 'blocked', resource = %s, job_id = %s"
                " WHERE id = %s",
                (resource, job_id, run_id),
            )
            return self.jobs.place(conn, job_id, lock)

    def place(self, run: dict[str, Any]) -> int:
        with self.connect() as conn:
            return self.jobs.place(conn, run["job_id"], resource_lock(run["resource"]))

    def superseding(self, run_id: int) -> str | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT superseded_by FROM gatekeeper.runs WHERE id = %s", (run_id,)
            ).fetchone()
        return row["superseded_by"] if row else None

    def in_state(self, *states: str) -> list[dict[str, Any]]:
        return self._runs("state = ANY(%s)", list(states))

    def unposted(self, older_than: float) -> list[dict[str, Any]]:
        """Ended runs whose final status GitHub has not taken, ended over `older_than` s ago."""
        return self._runs(
            "unposted AND finished_at < now() - make_interval(secs => %s)", older_than
        )

    def overdue(self, default: float) -> list[dict[str, Any]]:
        """Watched runs past their deadline: their own, else `default` s after creation."""
        return self._runs(
            "state = ANY(%s)"
            " AND now() > COALESCE(deadline, created_at + make_interval(secs => %s))",
            list(WATCHED),
            default,
        )

    def _runs(self, where: str, *params: Any) -> list[dict[str, Any]]:
        with self.connect() as conn:
            query = f"SELECT * FROM gatekeeper.runs WHERE {where} ORDER BY id"
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def p95_seconds(self, window: int = 200) -> tuple[float | None, int]:
        """The 95th percentile of delivery-to-verdict time over the last `window` runs that
        ended with a verdict other than error, and how many there were."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY s) AS p95, count(*) AS n"
                " FROM (SELECT EXTRACT(EPOCH FROM finished_at - created_at)::float8 AS s"
                "  FROM gatekeeper.runs WHERE state = 'done' AND decision IS NOT NULL"
                "  AND decision <> 'error' ORDER BY id DESC LIMIT %s) recent",
                (window,),
            ).fetchone()
        assert row is not None
        return row["p95"], int(row["n"])

    def delivery_ids(self, since: datetime) -> set[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT id FROM gatekeeper.deliveries WHERE received_at >= %s", (since,)
            ).fetchall()
        return {r["id"] for r in rows}


def _lock_pull_request(conn: psycopg.Connection[Any], target: dict[str, Any]) -> None:
    """Runs of one pull request are accepted (and resolved) one at a time, so run ids follow
    the order of acceptance and each new run sees every older one it must supersede."""
    if target.get("pr_number") is not None:
        key = f"gatekeeper-pr:{target['repository'].lower()}#{target['pr_number']}"
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
