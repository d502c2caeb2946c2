"""timestamp without time zone stores wall-clock time with no zone attached.

Values written from servers or sessions in different zones cannot be compared, and daylight
saving makes some of them ambiguous; timestamptz stores an instant and costs the same 8 bytes.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, Rule, Statement
from bot.judging.lint.sqlast import AT
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    columns = [(t, c.colname, c.typeName) for t, c in sqlast.defined_columns(stmt.node)]
    columns += [
        (t, cmd.name, cmd.def_.typeName)
        for t, cmd in sqlast.alter_table_cmds(stmt.node, AT.AT_AlterColumnType)
    ]
    for table, column, type_name in columns:
        if sqlast.pg_type(type_name).name == "timestamp":
            yield Hit(f"{table}.{column} is timestamp without time zone: prefer timestamptz")


RULE = Rule(
    id="prefer-timestamptz",
    title="timestamp without time zone",
    lock=None,
    rewrites=False,
    scans=False,
    why="Wall-clock values without a zone are ambiguous across servers and DST changes.",
    safe_alternative="timestamptz (timestamp with time zone).",
    default_level=Risk.low,
    check=check,
)
