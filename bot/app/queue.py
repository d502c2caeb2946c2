"""The durable work queue: procrastinate jobs in the service's own PostgreSQL.

Why procrastinate: it is a maintained queue made for PostgreSQL and psycopg 3 (which the
service already uses), so a job is a row inserted in the same transaction as the delivery
and its run (nothing accepted can be lost between the two); workers take jobs with
`SELECT ... FOR UPDATE SKIP LOCKED` and wake on LISTEN/NOTIFY; it has retries with
exponential backoff, job locks (jobs sharing a lock run one at a time, in the order they
were deferred), cancellation and abort requests, worker heartbeats to find the jobs of a
dead worker, and graceful shutdown. Celery or RQ would add a broker to run; a queue table
polled by hand would re-invent all of this.

The locks carry the scheduling rules:
- `lane_lock`: a repository has `repo_concurrency` lanes; a run takes lane `id % lanes`, so at
  most that many runs of one repository validate at once, oldest first in each lane;
- `resource_lock`: a run whose policy names a shared resource (a staging database, an
  environment) is re-deferred under that resource's lock and waits there, first in first
  out, instead of failing; `place` tells it how many are ahead.
The total number of runs at once is the worker's concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import procrastinate
import psycopg
from procrastinate import JobContext, RetryStrategy, sql
from procrastinate.exceptions import JobAborted

log = logging.getLogger("gatekeeper.queue")

TASK = "gatekeeper.run"
QUEUE = "runs"

# The procrastinate schema version the service schema's migration 2 installs. An upgrade of
# procrastinate must add its migration files as later service migrations, never re-run 2.
SCHEMA_VERSION = "3.10"


class Transient(Exception):
    """A failure worth trying again later: GitHub unreachable or answering 5xx/429 after its
    own retries, the database connection lost, the sandbox not starting. A verdict, however
    bad, is never transient."""


def lane_lock(repository: str, run_id: int, lanes: int) -> str:
    return f"repo:{repository.lower()}#{run_id % lanes}"


def resource_lock(name: str) -> str:
    return f"resource:{name}"


class Jobs:
    """Deferring and cancelling, on a connection the caller's transaction already holds."""

    def __init__(self) -> None:
        # Never opened: every call passes its own connection, so a job is inserted in the
        # transaction that records its run.
        self.app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())

    def defer(self, conn: psycopg.Connection[Any], run_id: int, lock: str) -> int:
        task = self.app.configure_task(name=TASK, queue=QUEUE, lock=lock, connection=conn)
        return task.defer(run_id=run_id)

    def cancel(self, conn: psycopg.Connection[Any], job_id: int) -> None:
        """A waiting job is cancelled; a running one is asked to abort at its next stage."""
        self.app.job_manager.cancel_job_by_id(job_id, abort=True, connection=conn)

    def place(self, conn: psycopg.Connection[Any], job_id: int, lock: str) -> int:
        """1 for the job that is next (or running), n for the n-th in line under `lock`."""
        (ahead,) = (
            conn.execute(
                "SELECT count(*) FROM procrastinate_jobs"
                " WHERE lock = %s AND id < %s AND status IN ('todo', 'doing')",
                (lock, job_id),
            )
            .fetchone()
            .values()
        )
        return int(ahead) + 1

    def recover_stalled(self, conn: psycopg.Connection[Any], silent_for: float) -> list[int]:
        """Put back in line the jobs of workers silent for `silent_for` s (killed, frozen, cut
        off): procrastinate finds them by heartbeat but leaves the retry to its user."""
        connector = self.app.connector
        stalled = connector.execute_query_all_with_connection(
            conn,
            sql.queries["select_stalled_jobs_by_heartbeat"],
            queue=QUEUE,
            task_name=TASK,
            seconds_since_heartbeat=silent_for,
        )
        for job in stalled:
            connector.execute_query_all_with_connection(
                conn,
                sql.queries["retry_job"],
                job_id=job["id"],
                retry_at=datetime.now(UTC),
                new_priority=None,
                new_queue_name=None,
                new_lock=None,
            )
        return [job["id"] for job in stalled]


Perform = Callable[[int, JobContext], None]


def worker_app(
    database_url: str, perform: Perform, *, attempts: int, backoff: int
) -> procrastinate.App:
    """The app a worker runs: one task, `perform(run_id, context)`, retried on `Transient`
    (and when a shutdown interrupted it) with exponential backoff, at most `attempts` times."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=database_url))
    retry = RetryStrategy(
        max_attempts=attempts, exponential_wait=backoff, retry_exceptions={Transient, JobAborted}
    )

    @app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retry)
    def run(context: JobContext, run_id: int) -> None:
        perform(run_id, context)

    return app


class Worker:
    """A procrastinate worker on its own thread and event loop, restarted when it dies (a lost
    database stops procrastinate's listener, and with it the worker)."""

    def __init__(
        self,
        app: procrastinate.App,
        *,
        concurrency: int,
        grace: float,
        heartbeat: float = 10.0,
        stalled_after: float = 30.0,
        name: str = "gatekeeper-worker",
    ):
        self.app = app
        self.options: dict[str, Any] = {
            "queues": [QUEUE],
            "concurrency": concurrency,
            "shutdown_graceful_timeout": grace,
            "install_signal_handlers": False,
            "update_heartbeat_interval": heartbeat,
            "stalled_worker_timeout": stalled_after,
            "name": name,
        }
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs; running ones get the grace period, then are aborted and
        re-queued (their task raises `JobAborted`, which the retry strategy re-defers)."""
        self._stopping.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.run(self._supervise())

    async def _supervise(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Sync tasks run on the loop's default executor: size it to the concurrency, or the
        # executor's own default (cores + 4) would cap it.
        self._loop.set_default_executor(
            ThreadPoolExecutor(self.options["concurrency"], thread_name_prefix="gatekeeper-run")
        )
        delay = 0.5
        while not self._stopping.is_set():
            try:
                async with self.app.open_async():
                    self._task = asyncio.current_task()
                    await self.app.run_worker_async(**self.options)
                    delay = 0.5
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return
                raise
            except Exception:
                log.exception("the queue worker stopped; restarting in %.1f s", delay)
            if self._stopping.is_set():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
