"""bot.observing.ddl against a real PostgreSQL: what the event triggers record, and what they
must not do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bot.observing import ddl
from bot.sandbox.postgres import APP_ROLE


@pytest.fixture
def pg_conn(fresh_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def conn(pg_conn: psycopg.Connection) -> psycopg.Connection:
    ddl.install(pg_conn)
    pg_conn.execute("CREATE TABLE sessions (id int PRIMARY KEY, state text, cluster_id text)")
    pg_conn.execute("INSERT INTO sessions VALUES (1, 'open', 'c1')")
    return pg_conn


def _after(
    conn: psycopg.Connection, statement: str, actor: psycopg.Connection | None = None
) -> list[ddl.DdlEvent]:
    """The events of one statement, run by `actor` (default: the same connection)."""
    since = ddl.mark(conn)
    (actor or conn).execute(statement)
    return ddl.read(conn, since)


def test_plain_ddl_is_recorded_with_its_statement(conn: psycopg.Connection) -> None:
    statement = "CREATE INDEX idx_sessions_state ON sessions (state)"
    [event] = _after(conn, statement)
    assert event.event == "ddl_command_end"
    assert event.command_tag == "CREATE INDEX"
    assert event.object_type == "index"
    assert event.schema_name == "public"
    assert event.object_identity == "public.idx_sessions_state"
    assert event.query == statement
    assert event.txid is not None and event.pid is not None


DO_BLOCK = """DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'sessions' AND column_name = 'tags') THEN
        ALTER TABLE sessions ADD COLUMN tags text[];
        CREATE INDEX idx_sessions_tags ON sessions USING gin (tags);
    END IF;
END $$"""


def test_ddl_inside_a_do_block_is_recorded_with_the_block_text(conn: psycopg.Connection) -> None:
    events = _after(conn, DO_BLOCK)
    assert [(e.command_tag, e.object_identity) for e in events] == [
        ("ALTER TABLE", "public.sessions"),
        ("CREATE INDEX", "public.idx_sessions_tags"),
    ]
    assert {e.query for e in events} == {DO_BLOCK}
    [command] = ddl.summarise(events)
    assert command.query == DO_BLOCK
    assert (
        command.describe() == "ALTER TABLE public.sessions; CREATE INDEX public.idx_sessions_tags"
    )


def test_a_do_block_that_does_nothing_records_nothing(conn: psycopg.Connection) -> None:
    conn.execute(DO_BLOCK)
    assert _after(conn, DO_BLOCK) == []


def test_drop_column_is_recorded_as_sql_drop(conn: psycopg.Connection) -> None:
    events = _after(conn, "ALTER TABLE sessions DROP COLUMN cluster_id")
    drops = [e for e in events if e.event == "sql_drop"]
    assert [(d.object_type, d.object_identity, d.command_tag) for d in drops] == [
        ("table column", "public.sessions.cluster_id", "ALTER TABLE")
    ]
    [command] = ddl.summarise(events)
    assert command.dropped == ["public.sessions.cluster_id"]


def test_drop_table_records_the_table_not_its_internals(conn: psycopg.Connection) -> None:
    events = _after(conn, "DROP TABLE sessions")
    assert [(e.event, e.object_type, e.object_identity) for e in events] == [
        ("sql_drop", "table", "public.sessions")
    ]


def test_alter_column_type_records_a_rewrite(conn: psycopg.Connection) -> None:
    events = _after(conn, "ALTER TABLE sessions ALTER COLUMN state TYPE varchar(20)")
    [rewrite] = [e for e in events if e.event == "table_rewrite"]
    assert rewrite.object_identity == "public.sessions"
    assert rewrite.rewrite_reason == 4
    [command] = ddl.summarise(events)
    assert command.rewritten == ["public.sessions"]
    assert "rewrote public.sessions (column type changed)" in command.actions


def test_add_column_without_default_does_not_rewrite(conn: psycopg.Connection) -> None:
    events = _after(conn, "ALTER TABLE sessions ADD COLUMN note text")
    assert [e.event for e in events] == ["ddl_command_end"]


def test_add_column_with_volatile_default_rewrites(conn: psycopg.Connection) -> None:
    events = _after(conn, "ALTER TABLE sessions ADD COLUMN token float8 DEFAULT random()")
    [rewrite] = [e for e in events if e.event == "table_rewrite"]
    assert ddl.rewrite_reason_text(rewrite.rewrite_reason) == "column default needs a value per row"


def test_grant_is_summarised_by_object_type(conn: psycopg.Connection) -> None:
    [command] = ddl.summarise(_after(conn, "GRANT SELECT ON sessions TO PUBLIC"))
    assert command.actions == ["GRANT table"]


def test_mark_and_read_separate_phases(conn: psycopg.Connection) -> None:
    base = ddl.mark(conn)
    conn.execute("CREATE TABLE base_only (id int)")
    head = ddl.mark(conn)
    conn.execute("CREATE TABLE head_only (id int)")
    again = ddl.mark(conn)

    def identities(since: int, until: int | None = None) -> list[str | None]:
        return [e.object_identity for e in ddl.read(conn, since, until)]

    assert identities(base, head) == ["public.base_only"]
    assert identities(head, again) == ["public.head_only"]
    assert identities(head) == ["public.head_only"]
    assert identities(again) == []


def test_the_same_statement_twice_is_two_commands(conn: psycopg.Connection) -> None:
    since = ddl.mark(conn)
    statement = "ALTER TABLE sessions ALTER COLUMN state SET DEFAULT 'new'"
    conn.execute(statement)
    conn.execute(statement)
    commands = ddl.summarise(ddl.read(conn, since))
    assert [c.query for c in commands] == [statement, statement]


def test_install_twice_keeps_one_set_of_triggers_and_the_record(conn: psycopg.Connection) -> None:
    before = ddl.mark(conn)
    ddl.install(conn)
    assert ddl.mark(conn) == before  # its own objects are never recorded
    assert len(_after(conn, "CREATE TABLE once (id int)")) == 1


def test_own_schema_is_ignored(pg_conn: psycopg.Connection) -> None:
    ddl.install(pg_conn)
    assert ddl.read(pg_conn) == []


def test_failing_app_ddl_raises_its_own_error(conn: psycopg.Connection) -> None:
    since = ddl.mark(conn)
    with pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute("ALTER TABLE missing ADD COLUMN x int")
    with pytest.raises(psycopg.errors.DuplicateColumn):
        conn.execute("ALTER TABLE sessions ADD COLUMN state text")
    assert ddl.read(conn, since) == []


def test_a_broken_record_never_breaks_the_app(conn: psycopg.Connection) -> None:
    warnings: list[str] = []
    conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
    conn.execute("ALTER TABLE _gatekeeper.ddl_events RENAME TO moved")
    conn.execute("ALTER TABLE sessions ADD COLUMN note text")
    conn.execute("ALTER TABLE sessions DROP COLUMN note")
    assert any("gatekeeper: could not record" in w for w in warnings)


def test_rolled_back_ddl_leaves_no_events(conn: psycopg.Connection) -> None:
    since = ddl.mark(conn)
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        conn.execute("CREATE TABLE doomed (id int)")
        conn.execute("SELECT 1 / 0")
    assert ddl.read(conn, since) == []


def test_ddl_of_an_ordinary_role_is_recorded(conn: psycopg.Connection, pg_sandbox: Any) -> None:
    """The sandbox's application role, as the change's migrations connect."""
    conn.execute(f"CREATE SCHEMA app AUTHORIZATION {APP_ROLE}")
    url = make_conninfo(conn.info.dsn, user=APP_ROLE, password=pg_sandbox.app_password)
    try:
        with psycopg.connect(url, autocommit=True) as app:
            events = _after(conn, "CREATE TABLE app.things (id int)", actor=app)
    finally:
        conn.execute("DROP SCHEMA app CASCADE")
    assert [e.object_identity for e in events] == ["app.things"]


def test_temporary_tables_are_not_recorded(conn: psycopg.Connection) -> None:
    assert _after(conn, "CREATE TEMP TABLE scratch (id int); DROP TABLE scratch") == []


def test_events_are_json_serialisable(conn: psycopg.Connection) -> None:
    events = _after(conn, "ALTER TABLE sessions ALTER COLUMN state TYPE varchar(20)")
    for command in ddl.summarise(events):
        assert ddl.DdlCommand.model_validate_json(command.model_dump_json()) == command
