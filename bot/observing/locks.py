"""Which relations a running migration really locks, sampled from `pg_locks` while it runs.

A linter can only guess lock modes from the migration's text, and it cannot see SQL that an
API runs at start-up inside `DO $$ ... $$` blocks or functions. The server knows: while the
migration runs, a `LockMonitor` on its own connection polls `pg_locks` and records which
relation was locked in which mode by which backend, from when to when, and whether that
backend had to wait for it.

What sampling cannot show, and why this complements (never replaces) the event-trigger capture
in `bot.observing.ddl` and the linter:
- A lock taken and released between two samples is missed. At the default 5 ms interval a
  quick `ALTER TABLE` on an empty table in autocommit may hold its lock for less than that. The
  locks that matter most for availability, held for a long time or waited for, are the ones a
  sampler does see; the event triggers still record every DDL command however short.
- `first_seen` and `last_seen` are the times of the first and last sample that saw the lock:
  a lower bound on how long it was held, accurate to about one interval.
- Relations created by a transaction that has not committed yet are not in the monitor's
  catalog snapshot, so their locks cannot be named and are skipped. Nobody else can see such
  a relation either, so nobody can be blocked on it.
- Locks are attributed to backends, not to "the migration": every other client of the database
  is reported too. Callers exclude their own sessions with `ignore_pids` (or `ignore()`).
  Autovacuum workers are skipped: their locks belong to no migration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import psycopg
from psycopg import errors
from pydantic import BaseModel

from bot.observing.ddl import SCHEMA

APPLICATION_NAME = "gatekeeper-lock-monitor"

# PostgreSQL's table-level lock modes, weakest first: each conflicts with at least the modes
# that the ones before it conflict with (the table in "Explicit Locking" of the manual).
LOCK_MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
_STRENGTH = {mode: rank for rank, mode in enumerate(LOCK_MODES)}

_RELKINDS = {
    "r": "table",
    "p": "partitioned table",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "c": "composite type",
    "t": "toast table",
}

# Catalogs, the toast tables behind everyone's tables, other sessions' temporary tables (they
# can block nobody) and our own bookkeeping are noise next to what the migration touches.
_SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", SCHEMA)

# One query per tick. Granted AccessShareLocks are plain reads: only a read that has to wait
# says something about the migration. SIReadLock is a serializable predicate lock, which blocks
# nobody. The database filter matters: relation oids repeat across databases. Joining the
# activity of all backends once costs half as much as asking per lock (1 ms for 200 locks).
_POLL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS relation,
       c.relkind::text AS relkind,
       quote_ident(tn.nspname) || '.' || quote_ident(t.relname) AS indexed_table,
       l.mode,
       l.pid,
       l.granted
FROM pg_catalog.pg_locks AS l
JOIN pg_catalog.pg_class AS c ON c.oid = l.relation
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index AS i ON i.indexrelid = c.oid
LEFT JOIN pg_catalog.pg_class AS t ON t.oid = i.indrelid
LEFT JOIN pg_catalog.pg_namespace AS tn ON tn.oid = t.relnamespace
LEFT JOIN pg_catalog.pg_stat_get_activity(NULL) AS a ON a.pid = l.pid
WHERE l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND l.pid IS DISTINCT FROM pg_backend_pid()
  AND NOT coalesce(l.pid = ANY(%(ignored)s::int4[]), false)
  AND l.mode <> 'SIReadLock'
  AND (l.mode <> 'AccessShareLock' OR NOT l.granted)
  AND n.nspname <> ALL(%(skipped)s::text[])
  AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
"""

# The monitor must never become the thing that blocks or floods: it waits briefly for a
# catalog lock and gives up on the tick, and keeps its 200 queries a second out of the server
# log, where `log_min_duration_statement = 0` (set for the statement log) would record them all.
_SESSION_SETTINGS = {
    "lock_timeout": "200ms",
    "statement_timeout": "2s",
    "idle_in_transaction_session_timeout": "0",
}
_QUIET_LOG_SETTINGS = {"log_min_duration_statement": "-1", "log_statement": "none"}
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class CurrentLock:
    """One relation lock another backend holds, or waits for, at the moment of one sample."""

    relation: str
    table: str
    kind: str
    mode: str
    pid: int | None
    granted: bool


class ObservedLock(BaseModel):
    """A relation lock one backend held (or waited for) in one mode, merged over samples.

    `table` is the table the lock bears on: the relation itself, or for an index the table it
    indexes, because an index locked exclusively stalls the queries on its table too.
    `granted` is False when any sample saw the backend still waiting for the lock.
    `pid` is None for a prepared transaction, which holds locks without a backend.
    """

    relation: str
    table: str
    kind: str
    mode: str
    pid: int | None
    granted: bool
    first_seen: float
    last_seen: float
    samples: int

    @property
    def held_for(self) -> float:
        """Lower bound on how long it was held (or waited for), to about one interval."""
        return self.last_seen - self.first_seen


def current_locks(
    connection: psycopg.Connection[Any], ignore_pids: Collection[int] = ()
) -> list[CurrentLock]:
    """The relation locks other backends hold or wait for right now, in this database.

    One query, so it also serves a one-off diagnosis (who blocks the migration that hangs?).
    The connection's own locks and those of `ignore_pids` are left out.
    """
    params = {"ignored": sorted(ignore_pids), "skipped": list(_SKIPPED_SCHEMAS)}
    rows = connection.execute(_POLL, params, prepare=True).fetchall()
    return [_current_lock(*row) for row in rows]


def _current_lock(
    relation: str,
    relkind: str,
    indexed_table: str | None,
    mode: str,
    pid: int | None,
    granted: bool,
) -> CurrentLock:
    kind = _RELKINDS.get(relkind, relkind)
    return CurrentLock(relation, indexed_table or relation, kind, mode, pid, granted)


def lock_strength(mode: str) -> int:
    """Rank of a lock mode in PostgreSQL's order; -1 for a mode that is not a table lock."""
    return _STRENGTH.get(mode, -1)


def strongest_by_table(locks: Iterable[ObservedLock]) -> dict[str, str]:
    """The strongest mode seen per table, whoever held it (or waited for it: it is what that
    session asked for, and it holds it as soon as it is granted)."""
    strongest: dict[str, str] = {}
    for lock in locks:
        known = strongest.get(lock.table)
        if known is None or lock_strength(lock.mode) > lock_strength(known):
            strongest[lock.table] = lock.mode
    return dict(sorted(strongest.items()))


class LockMonitor:
    """Samples `pg_locks` every `interval` seconds from a background thread while in `with`.

    Entering connects and takes the first sample before returning, so a migration started in
    the block is watched from its first statement; a database that cannot be reached then
    raises. Later failures do not: when the database goes away (dropped, sandbox stopped) the
    thread ends and `error` says why. Leaving the block always joins the thread and closes the
    connection, and never hides the block's own exception.
    """

    def __init__(
        self, database_url: str, interval: float = 0.005, ignore_pids: set[int] | None = None
    ):
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.database_url = database_url
        self.interval = interval
        self.error: str | None = None
        self.started_at: datetime | None = None
        self.pid: int | None = None
        self._ignored = set(ignore_pids or ())
        self._observed: dict[tuple[str, str, int | None], ObservedLock] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self._t0 = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> LockMonitor:
        if self._thread is not None or self._connection is not None:
            raise RuntimeError("a LockMonitor can be entered only once")
        connection = _connect(self.database_url)
        try:
            self.pid = connection.info.backend_pid
            self.started_at = datetime.now(UTC)
            self._t0 = time.monotonic()
            self._sample(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._thread = threading.Thread(target=self._run, name=APPLICATION_NAME, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """End sampling: join the thread, which closes its connection. Safe to call twice."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive() and self.error is None:
            # Only a server that stopped answering gets here; the daemon thread is abandoned.
            self.error = f"the monitor did not stop within {_STOP_TIMEOUT:g}s"

    @property
    def running(self) -> bool:
        """True while the thread samples; False once stopped or after the database went away."""
        return self._thread is not None and self._thread.is_alive()

    def ignore(self, pid: int) -> None:
        """Also leave out `pid` from now on: e.g. a session opened after the monitor started."""
        with self._lock:
            self._ignored.add(pid)

    # --- results --------------------------------------------------------------------------

    def observed(self) -> list[ObservedLock]:
        """Every lock seen so far, in the order they were first seen (copies, safe to keep)."""
        with self._lock:
            locks = [lock.model_copy() for lock in self._observed.values()]
        return sorted(locks, key=lambda lock: (lock.first_seen, lock.relation, lock.mode))

    def strongest_by_table(self) -> dict[str, str]:
        """Table -> the strongest lock mode any watched backend held on it or on its indexes."""
        return strongest_by_table(self.observed())

    def waits(self) -> list[ObservedLock]:
        """The locks some sample saw not granted: a backend queued behind another one."""
        return [lock for lock in self.observed() if not lock.granted]

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        connection = self._connection
        assert connection is not None
        try:
            self._loop(connection)
        except Exception as error:  # the thread must end quietly, whatever happened
            self.error = _describe(error)
        finally:
            connection.close()

    def _loop(self, connection: psycopg.Connection[Any]) -> None:
        """Sample at a fixed rate; a tick that takes longer than the interval delays the next."""
        next_tick = time.monotonic()
        while True:
            next_tick = max(next_tick + self.interval, time.monotonic())
            if self._stop.wait(next_tick - time.monotonic()):
                return
            try:
                self._sample(connection)
            except (errors.LockNotAvailable, errors.QueryCanceled):
                if connection.broken:
                    raise
                # A catalog briefly locked exclusively: this tick is lost, the next one may not be.

    def _sample(self, connection: psycopg.Connection[Any]) -> None:
        with self._lock:
            ignored = set(self._ignored)
        at = time.monotonic() - self._t0
        self._merge(current_locks(connection, ignored), at)

    def _merge(self, locks: Iterable[CurrentLock], at: float) -> None:
        with self._lock:
            for lock in set(locks):
                key = (lock.relation, lock.mode, lock.pid)
                known = self._observed.get(key)
                if known is None:
                    self._observed[key] = ObservedLock(
                        **asdict(lock), first_seen=at, last_seen=at, samples=1
                    )
                else:
                    known.last_seen = at
                    known.samples += 1
                    known.granted = known.granted and lock.granted


def _connect(database_url: str) -> psycopg.Connection[Any]:
    """The monitor's own autocommit session: every sample sees the catalog as of now."""
    connection = psycopg.connect(
        database_url, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=10
    )
    try:
        # Quiet first, so that not even the other settings reach the log. Without superuser
        # rights the polls stay in the log; the samples are just as right.
        for name, value in _QUIET_LOG_SETTINGS.items():
            with suppress(errors.InsufficientPrivilege):
                _set(connection, name, value)
        for name, value in _SESSION_SETTINGS.items():
            _set(connection, name, value)
    except BaseException:
        connection.close()
        raise
    return connection


def _set(connection: psycopg.Connection[Any], name: str, value: str) -> None:
    connection.execute("SELECT set_config(%s, %s, false)", [name, value])


def _describe(error: Exception) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else 'no message'}"
