"""char(n) pads every value with spaces and is no faster than text or varchar.

Comparisons ignore the padding in some places and not in others, which surprises application
code; PostgreSQL's own docs advise against it.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, column in sqlast.defined_columns(stmt.node):
        type_ = sqlast.pg_type(column.typeName)
        if type_.name == "bpchar":
            yield Hit(f"{table}.{column.colname} is {type_}: prefer text or varchar")


RULE = Rule(
    id="ban-char-field",
    title="char(n) column",
    lock=None,
    rewrites=False,
    scans=False,
    why="Blank-padded values behave inconsistently and save nothing.",
    safe_alternative="text (with a CHECK on length if needed) or varchar(n).",
    default_level=Risk.low,
    check=check,
)
