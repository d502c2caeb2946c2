"""Rollback plans come from the catalog diff; what cannot be undone is said, not faked."""

from __future__ import annotations

from bot.rollback import plan
from bot.schema import Change, SchemaDiff


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
