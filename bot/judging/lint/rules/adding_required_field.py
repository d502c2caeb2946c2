"""A NOT NULL column without a default cannot be added to a table that has rows.

PostgreSQL would have to put NULL in every existing row, so the ALTER fails with "column contains
null values" the moment it meets production data, even if it passed on an empty test database.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import CT
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, column in sqlast.added_columns(stmt.node):
        if not sqlast.is_not_null(column):
            continue
        fills_rows = (
            sqlast.column_constraints(
                column, CT.CONSTR_DEFAULT, CT.CONSTR_IDENTITY, CT.CONSTR_GENERATED
            )
            or sqlast.pg_type(column.typeName).name in sqlast.SERIAL_TYPES
        )
        if not fills_rows:
            yield Hit(
                f"ADD COLUMN {column.colname} NOT NULL without a DEFAULT fails as soon as "
                f"{table} has a row",
                table,
            )


RULE = Rule(
    id="adding-required-field",
    title="Adding a NOT NULL column without a default",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Existing rows would get NULL, so the migration fails on any non-empty table.",
    safe_alternative="Add the column with a constant DEFAULT (no rewrite since PostgreSQL 11), or "
    "add it nullable, backfill, then enforce NOT NULL via a validated CHECK constraint.",
    default_level=Risk.high,
    check=check,
)
