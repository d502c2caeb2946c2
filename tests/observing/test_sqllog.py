"""The server's statement log read back: which statements the change introduced, its UPDATEs
and DELETEs, and how long its ALTERs held their tables (the log lines as PostgreSQL writes
them with log_min_duration_statement = 0)."""

from __future__ import annotations

from bot.observing import sqllog


def _log(*statements: tuple[float, str]) -> str:
    lines = []
    for ms, sql in statements:
        first, *rest = sql.splitlines()
        lines.append(
            f"2026-12-02 12:00:00.000 UTC [42] LOG:  duration: {ms} ms  statement: {first}"
        )
        lines += [f"\t{line}" for line in rest]
    return "\n".join(lines) + "\n"


STARTUP = "UPDATE agents SET cluster_id = 'a' WHERE id = 'k8s' AND cluster_id IS NULL"
BACKFILL = "UPDATE item SET updated_at = created_at\nWHERE updated_at IS NULL"


def test_dml_leaves_out_what_the_base_ran_too():
    """Start-up SQL runs on every start: the base's own UPDATE is not the change's."""
    base = _log((0.2, STARTUP))
    head = _log((0.3, STARTUP), (1.5, BACKFILL), (0.1, "DELETE FROM item WHERE false"))
    assert sqllog.dml(head, base) == [
        ("UPDATE item SET updated_at = created_at\nWHERE updated_at IS NULL", "item", "UPDATE"),
        ("DELETE FROM item WHERE false", "item", "DELETE"),
    ]
    assert [verb for _, _, verb in sqllog.dml(head)] == ["UPDATE", "UPDATE", "DELETE"]


def test_dml_names_each_statement_once():
    head = _log((0.3, BACKFILL), (0.2, BACKFILL.replace("\n", " ")))
    assert len(sqllog.dml(head)) == 1


def test_introduced_is_what_the_head_ran_and_the_base_never_did():
    base = _log((0.2, "CREATE TABLE IF NOT EXISTS item (id int)"), (0.1, "SELECT 1"))
    head = _log(
        (0.2, "CREATE TABLE IF NOT EXISTS item (id int)"),
        (0.4, "ALTER TABLE item ADD COLUMN note text"),
        (0.1, "SELECT count(*) FROM item"),
    )
    assert [s.sql for s in sqllog.introduced(base, head)] == [
        "ALTER TABLE item ADD COLUMN note text"
    ]


def test_alter_ms_sums_each_tables_alters():
    head = _log(
        (12.5, "ALTER TABLE item ALTER COLUMN id TYPE bigint"),
        (0.5, 'ALTER TABLE public."user" ADD COLUMN x int'),
        (2.0, "ALTER TABLE item ADD COLUMN y int"),
    )
    assert sqllog.alter_ms(head) == {"item": 14.5, "public.user": 0.5}
