"""A UNIQUE or PRIMARY KEY constraint builds its index under ACCESS EXCLUSIVE.

Unlike CREATE UNIQUE INDEX CONCURRENTLY, ADD CONSTRAINT ... UNIQUE / PRIMARY KEY reads and sorts
the whole table while neither reads nor writes can proceed. Building the index concurrently first
and attaching it with USING INDEX makes the constraint a catalog change.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import CT
from bot.judging.verdict import Risk

_KINDS = {CT.CONSTR_UNIQUE: "UNIQUE", CT.CONSTR_PRIMARY: "PRIMARY KEY"}


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, constraint in sqlast.added_constraints(stmt.node, *_KINDS):
        if not constraint.indexname:
            yield Hit(
                f"ADD {_KINDS[constraint.contype]} on {table} builds its index under ACCESS "
                "EXCLUSIVE: reads and writes wait for the whole build",
                table,
            )
    for table, column in sqlast.added_columns(stmt.node):
        for constraint in sqlast.column_constraints(column, *_KINDS):
            yield Hit(
                f"ADD COLUMN {column.colname} {_KINDS[constraint.contype]} builds a unique index "
                f"on {table} under ACCESS EXCLUSIVE",
                table,
            )


RULE = Rule(
    id="disallowed-unique-constraint",
    title="Adding a UNIQUE / PRIMARY KEY constraint without USING INDEX",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=True,
    why="The unique index is built while reads and writes wait.",
    safe_alternative="CREATE UNIQUE INDEX CONCURRENTLY idx ON t (...); then ALTER TABLE t ADD "
    "CONSTRAINT c UNIQUE USING INDEX idx (or PRIMARY KEY USING INDEX idx).",
    default_level=Risk.medium,
    check=check,
)
