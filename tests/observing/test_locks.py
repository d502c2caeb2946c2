"""bot.observing.locks against a real PostgreSQL: the locks real statements take, as the
monitor saw them.

Every lock under test is held for at least HOLD seconds while the monitor samples every 5 ms,
so a sample sees it on any machine that is not stalled for a third of a second.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from bot.observing import locks
from bot.observing.locks import LockMonitor, ObservedLock

HOLD = 0.3
DEADLINE = 10.0

# A lock that is never released must fail the test, not hang the suite for five minutes.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def database(pg_sandbox: Any) -> Iterator[str]:
    """A fresh database per test with one table `t` (id, v) and an index on v; its URL."""
    name = f"lk_{uuid.uuid4().hex[:12]}"
    pg_sandbox.psql(f"CREATE DATABASE {name}")
    url = urlsplit(pg_sandbox.database_url)._replace(path=f"/{name}").geturl()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("CREATE INDEX t_v_idx ON t (v)")
            conn.execute("INSERT INTO t VALUES (1, 'a')")
        yield url
    finally:
        pg_sandbox.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _held(url: str, *statements: str) -> int:
    """Run `statements` in one transaction held open HOLD s by the server; the backend pid."""
    with psycopg.connect(url) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("SELECT pg_sleep(%s)", [HOLD])
        conn.commit()
        return conn.info.backend_pid


def _find(observed: list[ObservedLock], **fields: Any) -> list[ObservedLock]:
    return [lock for lock in observed if all(getattr(lock, k) == v for k, v in fields.items())]


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.01)


def test_add_column_is_seen_as_access_exclusive(database: str) -> None:
    with LockMonitor(database) as monitor:
        pid = _held(database, "ALTER TABLE t ADD COLUMN c int")
    [lock] = _find(monitor.observed(), relation="public.t", mode="AccessExclusiveLock", pid=pid)
    assert lock.granted and lock.table == "public.t" and lock.kind == "table"
    assert lock.samples >= 2
    assert 0 <= lock.first_seen <= lock.last_seen
    assert lock.held_for >= HOLD / 2
    assert monitor.error is None and not monitor.running


def test_create_index_takes_share_and_a_writer_waits_behind_it(database: str) -> None:
    with (
        LockMonitor(database) as monitor,
        psycopg.connect(database) as builder,
        psycopg.connect(database, autocommit=True) as writer,
    ):
        builder_pid, writer_pid = builder.info.backend_pid, writer.info.backend_pid
        builder.execute("CREATE INDEX t_id_v_idx ON t (id, v)")
        insert = threading.Thread(target=writer.execute, args=["INSERT INTO t VALUES (2)"])
        insert.start()
        _eventually(lambda: _waiting(database, writer_pid), "the INSERT to wait for its lock")
        time.sleep(HOLD)  # the transaction stays open: the writer keeps waiting
        builder.commit()
        insert.join(DEADLINE)
        assert not insert.is_alive()
    observed = monitor.observed()
    [share] = _find(observed, relation="public.t", mode="ShareLock", pid=builder_pid)
    assert share.granted
    [wait] = monitor.waits()
    assert (wait.relation, wait.mode, wait.pid) == ("public.t", "RowExclusiveLock", writer_pid)
    assert wait.held_for >= HOLD / 2
    # The index being built is not committed: the monitor cannot name it, and skips it.
    assert not _find(observed, relation="public.t_id_v_idx")


def _waiting(url: str, pid: int) -> bool:
    """Whether `pid` waits for a lock. A fresh session each time: within one transaction,
    pg_stat_activity keeps showing what it showed first."""
    query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, [pid]).fetchone()
    return bool(row and row[0])


def test_own_connection_ignored_pids_and_granted_reads_are_not_reported(database: str) -> None:
    with (
        psycopg.connect(database) as ignored,
        psycopg.connect(database) as reader,
        LockMonitor(database, ignore_pids={ignored.info.backend_pid}) as monitor,
    ):
        ignored.execute("LOCK TABLE t IN SHARE MODE")
        reader.execute("SELECT count(*) FROM t")
        watched = _held(database, "LOCK TABLE t IN ROW SHARE MODE")
    observed = monitor.observed()
    assert _find(observed, pid=watched, mode="RowShareLock", relation="public.t")
    pids = {lock.pid for lock in observed}
    assert pids == {watched}
    assert monitor.pid not in pids


def test_the_poll_leaves_out_its_own_session(database: str) -> None:
    with psycopg.connect(database) as own, psycopg.connect(database) as other:
        own.execute("LOCK TABLE t IN SHARE MODE")
        other.execute("LOCK TABLE t IN ROW SHARE MODE")
        seen = locks.current_locks(own)
        assert {(lock.pid, lock.mode) for lock in seen} == {
            (other.info.backend_pid, "RowShareLock")
        }
        assert locks.current_locks(own, ignore_pids={other.info.backend_pid}) == []


def test_strongest_by_table_prefers_access_exclusive_over_share(database: str) -> None:
    with LockMonitor(database) as monitor:
        _held(database, "ALTER TABLE t ADD COLUMN c int")
        _held(database, "CREATE INDEX t_id_idx ON t (id)")
    modes = {lock.mode for lock in _find(monitor.observed(), relation="public.t")}
    assert {"AccessExclusiveLock", "ShareLock"} <= modes
    assert monitor.strongest_by_table() == {"public.t": "AccessExclusiveLock"}


def test_an_index_lock_counts_for_its_table(database: str) -> None:
    with LockMonitor(database) as monitor:
        pid = _held(database, "REINDEX INDEX t_v_idx")
    [index] = _find(monitor.observed(), relation="public.t_v_idx", pid=pid)
    assert (index.kind, index.table, index.mode) == ("index", "public.t", "AccessExclusiveLock")
    assert _find(monitor.observed(), relation="public.t", mode="ShareLock", pid=pid)
    assert monitor.strongest_by_table() == {"public.t": "AccessExclusiveLock"}


def test_strongest_by_table_follows_postgres_order_not_the_order_seen() -> None:
    def lock(relation: str, table: str, mode: str) -> ObservedLock:
        return ObservedLock(
            relation=relation,
            table=table,
            kind="table",
            mode=mode,
            pid=1,
            granted=True,
            first_seen=0.0,
            last_seen=0.0,
            samples=1,
        )

    observed = [
        lock("public.a", "public.a", "AccessExclusiveLock"),
        lock("public.a", "public.a", "ShareLock"),
        lock("public.b", "public.b", "RowExclusiveLock"),
        lock("public.b_idx", "public.b", "ShareUpdateExclusiveLock"),
        lock("public.c", "public.c", "ShareRowExclusiveLock"),
        lock("public.c", "public.c", "ExclusiveLock"),
    ]
    assert locks.strongest_by_table(observed) == {
        "public.a": "AccessExclusiveLock",
        "public.b": "ShareUpdateExclusiveLock",
        "public.c": "ExclusiveLock",
    }
    assert [locks.lock_strength(mode) for mode in locks.LOCK_MODES] == list(range(8))


def test_dropped_database_ends_the_monitor_quietly(database: str, pg_sandbox: Any) -> None:
    name = urlsplit(database).path.lstrip("/")
    with LockMonitor(database) as monitor:
        assert monitor.running
        pg_sandbox.psql(f"DROP DATABASE {name} WITH (FORCE)")
        _eventually(lambda: not monitor.running, "the monitor to stop")
    assert monitor.error is not None and "terminat" in monitor.error


def test_terminated_connection_ends_the_monitor_quietly(database: str) -> None:
    with LockMonitor(database) as monitor, psycopg.connect(database, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [monitor.pid])
        _eventually(lambda: not monitor.running, "the monitor to stop")
        assert monitor.error is not None
        monitor.stop()  # stopping a monitor whose thread already ended is harmless


def test_leaving_the_block_closes_the_session_even_on_an_exception(database: str) -> None:
    with pytest.raises(ZeroDivisionError), LockMonitor(database) as monitor:
        assert _sessions(database) == 1
        1 / 0  # noqa: B018
    assert not monitor.running and monitor.error is None
    _eventually(lambda: _sessions(database) == 0, "the monitor's backend to exit")


def _sessions(url: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, [locks.APPLICATION_NAME]).fetchone()
    assert row is not None
    return int(row[0])


def test_an_unreachable_database_raises_on_entry(database: str) -> None:
    missing = urlsplit(database)._replace(path=f"/lk_missing_{uuid.uuid4().hex[:8]}").geturl()
    monitor = LockMonitor(missing)
    with pytest.raises(psycopg.OperationalError), monitor:
        pass
    assert not monitor.running


def test_a_role_without_superuser_rights_can_monitor(pg_sandbox: Any) -> None:
    """The sandbox's application role (no superuser) watches its own database's locks."""
    url = pg_sandbox.app_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == (False,)
        conn.execute("CREATE TABLE lk_t (id int PRIMARY KEY)")
    try:
        with LockMonitor(url) as monitor:
            pid = _held(url, "ALTER TABLE lk_t ADD COLUMN c int")
        lock = {"relation": "public.lk_t", "mode": "AccessExclusiveLock", "pid": pid}
        assert _find(monitor.observed(), **lock)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE lk_t")


def test_the_polls_stay_out_of_the_statement_log(database: str, pg_sandbox: Any) -> None:
    """The pipeline logs every statement while the API migrates; 200 polls a second would
    bury the migration's own statements in the log that sqllog reads."""
    name = urlsplit(database).path.lstrip("/")
    pg_sandbox.psql(f"ALTER DATABASE {name} SET log_min_duration_statement = 0")
    mark = pg_sandbox.log_mark("database")
    with LockMonitor(database):
        _held(database, "ALTER TABLE t ADD COLUMN c int")
    log = pg_sandbox.logs("database", mark)
    assert "ALTER TABLE t ADD COLUMN c int" in log
    assert "pg_locks" not in log
