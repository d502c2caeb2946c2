"""The server's statement log read back: which statements the change introduced, its UPDATEs
and DELETEs, and how long its ALTERs held their tables (the log lines as PostgreSQL writes
them with log_min_duration_statement = 0)."""

from __future__ import annotations

import pytest

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


def test_held_sums_each_tables_alters_and_index_builds():
    head = _log(
        (12.5, "ALTER TABLE item ALTER COLUMN id TYPE bigint"),
        (0.5, 'ALTER TABLE public."user" ADD COLUMN x int'),
        (2.0, "ALTER TABLE item ADD COLUMN y int"),
        (4.0, "CREATE INDEX item_y ON item (y)"),
        (9.0, "CREATE INDEX CONCURRENTLY item_x ON item (x)"),
    )
    found = sqllog.held(head)
    assert found.keys() == {"item", "public.user"}
    assert found["item"] == sqllog.Held(ms=18.5, lock="ACCESS EXCLUSIVE", grows=True)
    # A nullable column is a catalog change: brief, whatever the table's size.
    assert found["public.user"] == sqllog.Held(ms=0.5, lock="", grows=False)


@pytest.mark.parametrize(
    ("sql", "lock"),
    [
        ("CREATE INDEX i ON t (a)", "SHARE"),
        ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", "ACCESS EXCLUSIVE"),
        ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)", "ACCESS EXCLUSIVE"),
        ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID", ""),
        ("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p (id)", "SHARE ROW EXCLUSIVE"),
        ("ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX t_a", ""),
        ("ALTER TABLE t ADD PRIMARY KEY (a)", "ACCESS EXCLUSIVE"),
        ("ALTER TABLE t VALIDATE CONSTRAINT c", ""),
        ("ALTER TABLE t DROP COLUMN a", ""),
    ],
)
def test_held_knows_which_statements_read_the_whole_table(sql, lock):
    assert sqllog.held(_log((1.0, sql)))["t"].lock == lock


def test_of_database_keeps_one_databases_entries_with_their_continuations():
    log = (
        "2026-12-02 12:00:00.001 UTC [7] sandbox@app_replay LOG:  duration: 3.0 ms  "
        "statement: ALTER TABLE item\n\tADD COLUMN a int\n"
        "2026-12-02 12:00:00.002 UTC [8] sandbox@app LOG:  duration: 9.0 ms  "
        "statement: ALTER TABLE item ADD COLUMN b int\n"
        "2026-12-02 12:00:00.003 UTC [9] LOG:  checkpoint starting: time\n"
        "2026-12-02 12:00:00.004 UTC [7] sandbox@app_replay ERROR:  boom\n"
    )
    kept = sqllog.of_database(log, "app_replay")
    assert kept.splitlines() == [log.splitlines()[i] for i in (0, 1, 4)]
    assert sqllog.held(kept)["item"].ms == 3.0


def test_held_leaves_out_what_the_base_ran_too():
    """The base's own start-up index runs again at every start: not the change's build."""
    base = _log((0.2, "CREATE INDEX IF NOT EXISTS s_user ON sessions (user_id)"))
    head = _log(
        (0.1, "CREATE INDEX IF NOT EXISTS s_user ON sessions (user_id)"),
        (0.3, "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS tags text[]"),
    )
    assert sqllog.held(head, base) == {"sessions": sqllog.Held(ms=0.3, lock="", grows=False)}
    assert sqllog.held(head)["sessions"].grows
