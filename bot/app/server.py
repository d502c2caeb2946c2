"""`gatekeeper serve` and `gatekeeper worker`: the GitHub App as long-running processes.

Assembles the edges around the engine: settings, the service's own database (an embedded
PostgreSQL kept in the state dir unless DATABASE_URL is set), GitHub credentials, the queue
worker, the periodic sweeps, and the HTTP server. `serve` answers webhooks and, unless told
not to, works the queue too; `worker` only works the queue, so several of them (on one
machine or many) share one PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import uvicorn

from bot.app import logs
from bot.app.queue import Worker, worker_app
from bot.app.service import Service
from bot.app.settings import Settings
from bot.app.store import Store
from bot.app.webhook import create_app
from bot.github.auth import AppCredentials, Credentials, CredentialsError, TokenCredentials
from bot.github.client import GitHubClient
from bot.sandbox.local import LocalSandbox

log = logging.getLogger("gatekeeper.server")

PURGE_INTERVAL = 3600.0  # seconds; retention is counted in days


def credentials(settings: Settings) -> Credentials:
    if settings.app_id is not None:
        return AppCredentials.from_env(settings.app_id, api_url=settings.github_api_url)
    if settings.github_token is not None:
        return TokenCredentials(settings.github_token.get_secret_value())
    raise CredentialsError(
        "no GitHub credentials: set GATEKEEPER_APP_ID and GATEKEEPER_APP_PRIVATE_KEY(_FILE) "
        "for a GitHub App, or GATEKEEPER_GITHUB_TOKEN for local use"
    )


@contextmanager
def store_for(settings: Settings) -> Iterator[Store]:
    """DATABASE_URL, else an embedded PostgreSQL whose data survives restarts."""
    with ExitStack() as stack:
        url = settings.database_url
        if not url:
            datadir = settings.state_dir / "postgres"
            server = LocalSandbox(database="postgres", datadir=datadir, run_id="store")
            url = stack.enter_context(server).database_url
        store = Store(url, max_connections=settings.workers + 8)
        stack.callback(store.close)
        store.migrate()
        yield store


class Periodic:
    """Runs `task` now and then on a daemon thread until stopped; failures are logged."""

    def __init__(self, name: str, task: Callable[[], object], interval: float):
        self.task = task
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                self.task()
            except Exception:
                log.exception("%s failed; retrying in %.0f s", self.thread.name, self.interval)
            self.stopped.wait(self.interval)


@contextmanager
def working(service: Service, settings: Settings, *, worker: bool) -> Iterator[None]:
    """The background of a process: the sweeps (stalled jobs, deadlines, re-posts, places in
    line), the watch over runs dispatched to Actions, the retention purge, the redelivery
    sweep and, if `worker`, a queue worker. On exit the worker stops taking jobs and its
    running ones get `shutdown_grace` seconds before they are stopped and queued again."""
    tasks = [
        Periodic("gatekeeper-sweep", service.sweep, settings.sweep_interval),
        Periodic("gatekeeper-watch", service.watch_dispatched, settings.watch_interval),
        Periodic("gatekeeper-purge", service.purge, PURGE_INTERVAL),
    ]
    if settings.app_id is not None:  # the deliveries API needs the App's own JWT
        tasks.append(
            Periodic("gatekeeper-redeliver", service.redeliver_failed, settings.redelivery_interval)
        )
    runner = None
    if worker:
        app = worker_app(
            service.store.database_url,
            service.perform,
            attempts=settings.attempts,
            backoff=settings.backoff,
        )
        runner = Worker(
            app,
            concurrency=settings.workers,
            grace=settings.shutdown_grace,
            heartbeat=settings.heartbeat,
            stalled_after=settings.stalled_after,
            name=f"gatekeeper@{socket.gethostname()}:{os.getpid()}",
        )
        runner.start()
    for task in tasks:
        task.start()
    try:
        yield
    finally:
        if runner is not None:
            runner.stop()
        for task in tasks:
            task.stop()


def serve(settings: Settings) -> None:
    logs.configure(json=settings.log_json)
    client = GitHubClient(settings.github_api_url, credentials(settings))
    with store_for(settings) as store:
        service = Service(settings, store, client)
        service.start()
        with working(service, settings, worker=settings.worker):
            uvicorn.run(
                create_app(service), host=settings.host, port=settings.port, log_config=None
            )


def work(settings: Settings) -> None:
    """`gatekeeper worker`: take jobs until SIGTERM or SIGINT, then drain."""
    logs.configure(json=settings.log_json)
    client = GitHubClient(settings.github_api_url, credentials(settings))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with store_for(settings) as store:
        service = Service(settings, store, client)
        service.start()
        with working(service, settings, worker=True):
            log.info("worker started: %d at once", settings.workers)
            stop.wait()
            log.info("stopping: running validations get %.0f s", settings.shutdown_grace)
