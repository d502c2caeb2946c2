"""Rollback plans come from the catalog diff; what cannot be undone is said, not faked."""

from __future__ import annotations

import psycopg

from bot.judging.rollback import check, plan
from bot.observing.schema import Change, SchemaDiff, diff, snapshot


def test_inverse_of_each_change_newest_first():
    diff = SchemaDiff(
        changes=[
            Change(op="added", kind="column", name="public.sessions.tags", detail=""),
            Change(op="added", kind="index", name="public.idx_sessions_tags", detail=""),
            Change(
                op="changed",
                kind="column",
                name="public.sessions.state",
                detail="",
                fields={"type": ("text", "character varying(20)"), "nullable": (True, False)},
            ),
            Change(
                op="removed",
                kind="column",
                name="public.sessions.cluster_id",
                detail="x",
                destructive=True,
            ),
        ]
    )
    steps = plan(diff)
    assert steps[0].startswith("-- cannot be undone: - column x")
    assert steps[1] == (
        "ALTER TABLE public.sessions ALTER COLUMN state TYPE text USING state::text, "
        "ALTER COLUMN state DROP NOT NULL;"
    )
    assert steps[2] == "DROP INDEX CONCURRENTLY IF EXISTS public.idx_sessions_tags;"
    assert steps[3].startswith("ALTER TABLE public.sessions DROP COLUMN IF EXISTS tags;")
    assert "lossy" in steps[3]


def test_no_change_no_rollback():
    assert plan(SchemaDiff(changes=[])) == []


def test_added_enum_is_dropped_as_a_type():
    diff = SchemaDiff(
        changes=[
            Change(op="added", kind="enum", name="public.mood", detail=""),
            Change(op="added", kind="sequence", name="public.ticket_no", detail=""),
        ]
    )
    assert plan(diff) == [
        "DROP SEQUENCE IF EXISTS public.ticket_no;",
        "DROP TYPE IF EXISTS public.mood;",
    ]


def test_the_derived_rollback_is_run_and_an_impossible_cast_is_named(fresh_database):
    """int -> uuid looks reversible in a plan; PostgreSQL says it is not."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id integer PRIMARY KEY, name text)")
        before = snapshot(conn)
        conn.execute("ALTER TABLE item ALTER COLUMN id TYPE uuid USING gen_random_uuid()")
        conn.execute("ALTER TABLE item ADD COLUMN note text")
        results = check(conn, plan(diff(before, snapshot(conn))))
        failed = [r for r in results if r["ok"] is False]
        assert len(failed) == 1 and "uuid" in str(failed[0]["error"])
        assert "integer" in str(failed[0]["step"])
        remaining = diff(before, snapshot(conn))
        # The added column went; the id is still a uuid: the base schema is not restored.
        assert [c.name for c in remaining.changes] == ["public.item.id"]


def test_a_rollback_of_additions_restores_the_base_schema(fresh_database):
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id integer PRIMARY KEY)")
        before = snapshot(conn)
        conn.execute("ALTER TABLE item ADD COLUMN note text DEFAULT 'x'")
        conn.execute("CREATE INDEX item_note ON item (note)")
        results = check(conn, plan(diff(before, snapshot(conn))))
        assert all(r["ok"] for r in results)
        assert diff(before, snapshot(conn)).is_empty
