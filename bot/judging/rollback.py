"""A rollback derived from what the migration actually did to the schema.

Written from the before/after catalog diff rather than the migration text, so it also
covers DDL the API ran at start-up. What cannot be undone (dropped data, enum values) is
said plainly instead of being given a statement that would pretend to. The plan is then
run (`check`): a derived step that only looks right is worse than none.
"""

from __future__ import annotations

import psycopg

from bot.observing.schema import Change, SchemaDiff


def plan(diff: SchemaDiff) -> list[str]:
    """SQL to return to the base schema, newest change first; comments for the irreversible."""
    return [step for change in reversed(diff.changes) if (step := _undo(change))]


def _split(name: str) -> tuple[str, str]:
    table, _, last = name.rpartition(".")
    return table, _quote(last)


def _quote(identifier: str) -> str:
    return identifier if identifier.isidentifier() and identifier.islower() else f'"{identifier}"'


def _undo(change: Change) -> str | None:
    kind, op = change.kind, change.op
    if op == "added":
        if kind == "table":
            return f"DROP TABLE IF EXISTS {change.name};  -- lossy: rows written since are lost"
        if kind == "column":
            table, column = _split(change.name)
            return (
                f"ALTER TABLE {table} DROP COLUMN IF EXISTS {column};"
                "  -- lossy: values written since are lost"
            )
        if kind == "index":
            return f"DROP INDEX CONCURRENTLY IF EXISTS {change.name};"
        if kind == "constraint":
            table, constraint = _split(change.name)
            return f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint};"
        if kind == "enum":
            return f"DROP TYPE IF EXISTS {change.name};"
        if kind == "sequence":
            return f"DROP SEQUENCE IF EXISTS {change.name};"
        if kind == "extension":
            return f"DROP EXTENSION IF EXISTS {_quote(change.name)};"
        return f"-- cannot be undone in SQL: {change.line()} (PostgreSQL cannot drop enum values)"
    if op == "removed":
        return f"-- cannot be undone: {change.line()}; restore it and its data from a backup"
    if kind == "column":
        return _undo_column(change)
    return f"-- undo by hand: {change.line()}"


def _undo_column(change: Change) -> str:
    table, column = _split(change.name)
    parts = []
    for field, (old, _new) in change.fields.items():
        if field == "type":
            parts.append(f"ALTER COLUMN {column} TYPE {old} USING {column}::{old}")
        elif field == "nullable":
            parts.append(f"ALTER COLUMN {column} {'DROP' if old else 'SET'} NOT NULL")
        elif field == "default":
            parts.append(
                f"ALTER COLUMN {column} SET DEFAULT {old}"
                if old is not None
                else f"ALTER COLUMN {column} DROP DEFAULT"
            )
        else:
            return f"-- undo by hand: {change.line()}"
    return f"ALTER TABLE {table} {', '.join(parts)};"


def check(conn: psycopg.Connection, steps: list[str]) -> list[dict[str, str | bool | None]]:
    """Run the derived rollback on the migrated database, step by step, as a person rolling
    back would. A step PostgreSQL refuses (a cast that cannot go back: uuid to integer) is
    irreversible, with the server's reason; a comment step is irreversible or manual as it
    says. The caller compares the resulting schema with the base's."""
    results: list[dict[str, str | bool | None]] = []
    for step in steps:
        if step.lstrip().startswith("--"):
            results.append({"step": step, "ok": None, "error": None})
            continue
        try:
            conn.execute(step.split(";  --")[0])
        except psycopg.Error as exc:
            message = exc.diag.message_primary or str(exc).strip()
            results.append({"step": step, "ok": False, "error": message})
        else:
            results.append({"step": step, "ok": True, "error": None})
    return results
