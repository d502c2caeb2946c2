"""Server-side record of the DDL that actually ran in the sandbox database.

Why event triggers and not `log_statement = 'ddl'`: the server log only sees the top-level
statement the client sent, classified by its own tag. A migration that an API runs at start-up
inside `DO $$ ... $$` (or a function) is logged, if at all, as one opaque `DO` statement, and
the `ALTER TABLE` inside it is never classified as DDL. Event triggers fire for every DDL
command however deeply it is nested, and tell which objects were created, altered or dropped
and which tables were rewritten; `current_query()` still gives the top-level text (the whole
DO block) that caused them.

What this record cannot show:
- Events are rows written in the application's own transaction: when that transaction rolls
  back, its events vanish with it. That is acceptable, because the schema did not change either.
- Event triggers do not fire for shared objects (databases, roles, tablespaces), for event
  triggers themselves, nor in a session that turned `event_triggers` off (a superuser may).
- `current_query()` is the whole query string of the client's message: a migration file sent as
  one multi-statement string shows up as one query, not one per statement.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row
from pydantic import BaseModel

SCHEMA = "_gatekeeper"

# The trigger functions are SECURITY DEFINER so that an application connected as an ordinary
# role can still write the record (it has no rights on `_gatekeeper`), with a fixed search_path
# so that the application's own objects cannot shadow the ones used here. Each body catches
# its own errors: a failure to *record* must never fail the application's DDL. The
# application's own errors are raised before these triggers run, so they are untouched.
_INSTALL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};

CREATE TABLE IF NOT EXISTS {SCHEMA}.ddl_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    event text NOT NULL,
    command_tag text,
    object_type text,
    schema_name text,
    object_identity text,
    query text,
    rewrite_reason int,
    txid bigint DEFAULT txid_current(),
    pid int DEFAULT pg_backend_pid(),
    statement_at timestamptz DEFAULT statement_timestamp()
);

CREATE OR REPLACE FUNCTION {SCHEMA}.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    INSERT INTO {SCHEMA}.ddl_events
        (event, command_tag, object_type, schema_name, object_identity, query)
    SELECT TG_EVENT, c.command_tag, c.object_type, c.schema_name, c.object_identity,
           current_query()
    FROM pg_event_trigger_ddl_commands() AS c
    WHERE NOT c.in_extension
      AND c.schema_name IS DISTINCT FROM '{SCHEMA}'
      AND coalesce(c.schema_name, '') NOT LIKE 'pg\\_temp%'
      AND NOT (c.object_type = 'schema' AND c.object_identity = '{SCHEMA}');
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'gatekeeper: could not record DDL (%): %', SQLSTATE, SQLERRM;
END
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    -- original: what the statement named; normal: what CASCADE took with it. Skipped: the
    -- internal and automatic dependents (row types, TOAST tables, a dropped table's indexes).
    INSERT INTO {SCHEMA}.ddl_events
        (event, command_tag, object_type, schema_name, object_identity, query)
    SELECT TG_EVENT, TG_TAG, d.object_type, d.schema_name, d.object_identity, current_query()
    FROM pg_event_trigger_dropped_objects() AS d
    WHERE (d.original OR d.normal)
      AND NOT d.is_temporary
      AND d.schema_name IS DISTINCT FROM '{SCHEMA}'
      AND NOT (d.object_type = 'schema' AND d.object_identity = '{SCHEMA}');
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'gatekeeper: could not record DROP (%): %', SQLSTATE, SQLERRM;
END
$fn$;

CREATE OR REPLACE FUNCTION {SCHEMA}.on_table_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    INSERT INTO {SCHEMA}.ddl_events
        (event, command_tag, object_type, schema_name, object_identity, query, rewrite_reason)
    SELECT TG_EVENT, TG_TAG, o.type, o.schema, o.identity, current_query(),
           pg_event_trigger_table_rewrite_reason()
    FROM pg_identify_object('pg_class'::regclass, pg_event_trigger_table_rewrite_oid(), 0) AS o
    WHERE o.schema IS DISTINCT FROM '{SCHEMA}'
      AND coalesce(o.schema, '') NOT LIKE 'pg\\_temp%';
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'gatekeeper: could not record table rewrite (%): %', SQLSTATE, SQLERRM;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS gatekeeper_ddl_command_end;
CREATE EVENT TRIGGER gatekeeper_ddl_command_end ON ddl_command_end
    EXECUTE FUNCTION {SCHEMA}.on_ddl_command_end();
DROP EVENT TRIGGER IF EXISTS gatekeeper_sql_drop;
CREATE EVENT TRIGGER gatekeeper_sql_drop ON sql_drop
    EXECUTE FUNCTION {SCHEMA}.on_sql_drop();
DROP EVENT TRIGGER IF EXISTS gatekeeper_table_rewrite;
CREATE EVENT TRIGGER gatekeeper_table_rewrite ON table_rewrite
    EXECUTE FUNCTION {SCHEMA}.on_table_rewrite();
"""

# Bits of pg_event_trigger_table_rewrite_reason() (AT_REWRITE_* in PostgreSQL's source).
REWRITE_REASONS = {
    1: "persistence changed",
    2: "column default needs a value per row",
    4: "column type changed",
    8: "access method changed",
}


class DdlEvent(BaseModel):
    """One row of `_gatekeeper.ddl_events`: one object touched by one DDL command."""

    id: int
    at: datetime
    event: Literal["ddl_command_end", "sql_drop", "table_rewrite"]
    command_tag: str | None
    object_type: str | None
    schema_name: str | None
    object_identity: str | None
    query: str | None
    rewrite_reason: int | None
    txid: int | None
    pid: int | None
    statement_at: datetime | None


class DdlCommand(BaseModel):
    """What one top-level statement (e.g. a whole DO block) did, in the order it happened."""

    query: str | None
    txid: int | None
    first_id: int
    last_id: int
    # e.g. "ALTER TABLE public.sessions", "dropped table column public.sessions.cluster_id"
    actions: list[str]
    dropped: list[str]  # object identities
    rewritten: list[str]  # table identities

    def describe(self) -> str:
        return "; ".join(self.actions)


def install(conn: psycopg.Connection) -> None:
    """Create the event log and its triggers. Safe to call again: it replaces them in place.

    Needs a superuser (event triggers are superuser-only); the sandbox connects as one.
    """
    with conn.transaction():
        conn.execute(_INSTALL)


def mark(conn: psycopg.Connection) -> int:
    """The id of the newest event so far, to read only what a later phase did.

    Ids are taken when an event is written, not when its transaction commits: a phase must be
    over (its transactions committed) before the next mark is taken.
    """
    row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {SCHEMA}.ddl_events").fetchone()
    assert row is not None
    return int(row[0])


def read(conn: psycopg.Connection, since: int = 0, until: int | None = None) -> list[DdlEvent]:
    """Events with `since < id <= until`, oldest first."""
    with conn.cursor(row_factory=class_row(DdlEvent)) as cur:
        cur.execute(
            f"SELECT id, at, event, command_tag, object_type, schema_name, object_identity,"
            f" query, rewrite_reason, txid, pid, statement_at FROM {SCHEMA}.ddl_events"
            " WHERE id > %(since)s AND (%(until)s::bigint IS NULL OR id <= %(until)s)"
            " ORDER BY id",
            {"since": since, "until": until},
        )
        return cur.fetchall()


def summarise(events: Iterable[DdlEvent]) -> list[DdlCommand]:
    """Group consecutive events by the top-level statement that caused them.

    A statement is identified by session, start time and text, so the same migration applied
    twice in a row stays two commands.
    """
    commands: list[DdlCommand] = []
    key: tuple[object, ...] | None = None
    for event in events:
        event_key = (event.pid, event.statement_at, event.query)
        if event_key != key:
            key = event_key
            commands.append(
                DdlCommand(
                    query=event.query,
                    txid=event.txid,
                    first_id=event.id,
                    last_id=event.id,
                    actions=[],
                    dropped=[],
                    rewritten=[],
                )
            )
        _add(commands[-1], event)
    return commands


def _add(command: DdlCommand, event: DdlEvent) -> None:
    command.last_id = event.id
    # GRANT and REVOKE report no identity, only an upper-case object type.
    identity = event.object_identity or (event.object_type or "?").lower()
    if event.event == "table_rewrite":
        _append_new(command.rewritten, identity)
        action = f"rewrote {identity} ({rewrite_reason_text(event.rewrite_reason)})"
    elif event.event == "sql_drop":
        _append_new(command.dropped, identity)
        action = f"dropped {event.object_type} {identity}"
    else:
        action = f"{event.command_tag} {identity}"
    _append_new(command.actions, action)


def _append_new(items: list[str], item: str) -> None:
    """A DO block that alters one table five times reads better as one line."""
    if item not in items:
        items.append(item)


def rewrite_reason_text(reason: int | None) -> str:
    """The reason bits in words, e.g. 'column type changed'."""
    if not reason:
        return "reason unknown"
    words = [text for bit, text in REWRITE_REASONS.items() if reason & bit]
    return ", ".join(words) or f"reason {reason}"
