"""The Sandbox contract: a throw-away PostgreSQL plus the API under test.

The pipeline only talks to this interface, so the embedded `local` sandbox and a
`containers` sandbox are interchangeable and must give the same verdict.
"""

from __future__ import annotations

import atexit
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.sql import Composable

LogSource = Literal["api", "database"]


class SandboxError(Exception):
    """The sandbox itself failed. `log_tail` carries the evidence for the report."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class DatabaseStartError(SandboxError):
    """PostgreSQL did not start: an infrastructure failure, never the change's fault."""


class ApiStartError(SandboxError):
    """The API under test exited or never answered its health URL in time.

    Whether this is the change's fault is for the pipeline to judge (the base branch's API
    failing is an infrastructure error; the merge result's API failing is a reject).
    """

    def __init__(self, message: str, log_tail: str = "", returncode: int | None = None):
        super().__init__(message, log_tail)
        self.returncode = returncode


class BuildFailed(SandboxError):
    """The API's image did not build from the checkout's Dockerfile.

    Like `ApiStartError`, who is to blame depends on the checkout: the merge result's image
    failing to build is the change's fault (a reject, with `log_tail` as the evidence); the base
    branch's is an infrastructure error. `workdir` and `name` are what `start_api` was given.
    """

    def __init__(self, message: str, log_tail: str = "", *, workdir: Path, name: str):
        super().__init__(message, log_tail)
        self.workdir = workdir
        self.name = name


class EngineUnavailable(SandboxError):
    """No container engine answers: an infrastructure error; the message says how to start one."""


@dataclass
class ApiSpec:
    """How to start the API under test. Values are already expanded by the policy layer."""

    command: str  # run by /bin/sh in `workdir`
    env: dict[str, str] = field(default_factory=dict)  # the policy's api.env, expanded
    # What a process on the host starts from (environment.base): never Gatekeeper's own
    # environment. Containers take their PATH and the rest from the image instead.
    process_env: dict[str, str] = field(default_factory=dict)
    # The command line that confines a process on the host (confine.py); empty: none.
    confine: tuple[str, ...] = ()
    port_env: str = "PORT"  # the sandbox sets this variable to the chosen port
    database_url_env: str = "DATABASE_URL"  # ...and this one to the sandbox's database URL
    health_path: str = "/healthz"
    start_timeout: float = 30.0
    # Another database of the sandbox's server to point the API at (the populated replay's
    # copy, which start-up migrations reach only through the API); None: the run's own.
    database: str | None = None

    def database_url(self, url: str) -> str:
        """The URL the API is given: the sandbox's `url`, on `database` when one is set."""
        return url if self.database is None else url_for(url, self.database)


def url_for(url: str, database: str) -> str:
    """`url` with another database name, in the form it came in: a `postgresql://` URL stays
    one (an application's settings often accept nothing else), key=value stays key=value."""
    parts = urlsplit(url)
    if parts.scheme:
        return urlunsplit(parts._replace(path="/" + quote(database, safe="")))
    return make_conninfo(**{**conninfo_to_dict(url), "dbname": database})


class Sandbox(ABC):
    """Context manager: `with LocalSandbox(...) as sb:` tears everything down on any exit."""

    database_url: str  # the gate's own (superuser) connection: never handed to the change
    # The change's connection (its migrations, its API): a role that owns the application's
    # database and nothing else, with a password, over TCP.
    app_database_url: str = ""
    api_url: str | None = None
    # The network namespace (netns.py) the database and the API listen in, where the change's
    # migration command runs too: it then reaches nothing but them. None: the host's network.
    # A kind that `supports_netns` takes the one set before `start` (the local sandbox: the
    # run slot's); another may make its own at `start` (the containers sandbox's holder).
    netns: Path | None = None
    supports_netns = False  # whether this kind takes a `netns` set before `start`
    network_note = ""  # what the report's isolation line adds about this sandbox's network

    @property
    def gate_app_url(self) -> str:
        """The application role's URL as the gate reaches it (to run directory migrations as
        that role): the change's own may point inside a network namespace."""
        return self.app_database_url

    @abstractmethod
    def start(self) -> None:
        """Start PostgreSQL and create the application database. Raises DatabaseStartError."""

    @abstractmethod
    def start_api(self, workdir: Path, spec: ApiSpec, name: str) -> str:
        """Start the API (stopping a running one first) and wait for health; returns api_url."""

    @abstractmethod
    def stop_api(self) -> int | None:
        """Stop the API if running; returns its exit code."""

    @abstractmethod
    def log_mark(self, source: LogSource) -> int:
        """An opaque position in a log, for reading only what came after it."""

    @abstractmethod
    def logs(self, source: LogSource, since: int = 0) -> str:
        """The log text written after `since`."""

    _connection: psycopg.Connection[dict[str, Any]] | None = None

    def psql(
        self, sql: str | Composable, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run one statement as superuser; rows as dicts (empty for statements without rows).

        One lazily opened connection, shared by every sandbox kind: only the URL differs."""
        if self._connection is None or self._connection.closed:
            if not self.database_url:
                raise SandboxError("the sandbox is not running")
            self._connection = psycopg.connect(
                self.database_url, autocommit=True, row_factory=dict_row
            )
        cursor = self._connection.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    @abstractmethod
    def dump_database(self, path: Path, exclude_schema: str) -> None:
        """The application's database into `path`, as the superuser, without the schema
        `exclude_schema` (bot/sandbox/dump.py). Raises SandboxError."""

    @abstractmethod
    def restore_database(self, path: Path, role: str) -> None:
        """A dump of `dump_database` into the application's (empty) database, as `role`, in
        one transaction. Raises SandboxError, leaving the database as it was."""

    def available_extensions(self) -> set[str]:
        """What CREATE EXTENSION can install here (the embedded wheel lacks uuid-ossp and
        pgcrypto); the pipeline checks the policy's list against it."""
        return {row["name"] for row in self.psql("SELECT name FROM pg_available_extensions")}

    def close_connection(self) -> None:
        """Close the shared connection (it reopens on the next `psql`): at teardown, and
        before the database serves as a template, which must have no session."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def stop(self) -> None:
        """Stop everything and delete every file the sandbox made. Safe to call twice.

        The API stops first, then the shared connection closes, then `_teardown_steps` run in
        their order. Every step runs even when an earlier one fails, and Ctrl-C and SIGTERM
        wait until all have run."""
        with signals_deferred(), ExitStack() as steps:
            # ExitStack runs its callbacks last-in first-out.
            for step in reversed((self.stop_api, self.close_connection, *self._teardown_steps())):
                steps.callback(step)
            atexit.unregister(self.stop)

    @abstractmethod
    def _teardown_steps(self) -> Sequence[Callable[[], None]]:
        """What this kind of sandbox removes once the API is stopped, in order; each step is
        safe to call twice."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then deliver them as usual.

    Only the main thread ever receives KeyboardInterrupt, so elsewhere there is nothing to do.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: installed outside Python, which we cannot restore
            previous[signum] = handler
            signal.signal(signum, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
