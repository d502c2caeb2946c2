"""`gatekeeper serve`: the GitHub App as a long-running service.

Assembles the edges around the engine: settings, the service's own database (an embedded
PostgreSQL kept in the state dir unless DATABASE_URL is set), GitHub credentials, the
worker threads, the periodic redelivery sweep, and the HTTP server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import uvicorn

from bot.github.auth import AppCredentials, Credentials, CredentialsError, TokenCredentials
from bot.github.client import GitHubClient
from bot.sandbox.local import LocalSandbox
from bot.service import Service
from bot.settings import Settings
from bot.store import Store
from bot.webhook import create_app

log = logging.getLogger("gatekeeper.server")


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


def serve(settings: Settings) -> None:
    client = GitHubClient(settings.github_api_url, credentials(settings))
    with store_for(settings) as store:
        service = Service(settings, store, client)
        service.start()
        tasks = [Periodic("gatekeeper-watch", service.watch_dispatched, settings.watch_interval)]
        if settings.app_id is not None:  # the deliveries API needs the App's own JWT
            tasks.append(
                Periodic(
                    "gatekeeper-redeliver", service.redeliver_failed, settings.redelivery_interval
                )
            )
        for task in tasks:
            task.start()
        try:
            uvicorn.run(create_app(service), host=settings.host, port=settings.port)
        finally:
            for task in tasks:
                task.stop()
            service.close()
