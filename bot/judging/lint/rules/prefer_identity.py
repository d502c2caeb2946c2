"""serial is a legacy shorthand; identity columns are the SQL-standard replacement.

serial's sequence is a separate object with its own ownership and grants, it is easy to insert
explicit ids that later collide with it, and it is not copied by CREATE TABLE ... LIKE.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, column in sqlast.defined_columns(stmt.node):
        type_ = sqlast.pg_type(column.typeName)
        if type_.name in sqlast.SERIAL_TYPES:
            yield Hit(f"{table}.{column.colname} is {type_}: prefer an identity column")


RULE = Rule(
    id="prefer-identity",
    title="serial instead of an identity column",
    lock=None,
    rewrites=False,
    scans=False,
    why="serial sequences are separate objects: grants, ownership and manual ids go wrong.",
    safe_alternative="bigint GENERATED ALWAYS AS IDENTITY (or BY DEFAULT).",
    default_level=Risk.low,
    check=check,
)
