"""Dropping a column destroys its data and breaks code that still reads it.

The drop is a catalog change (the space is reclaimed later), but the running release may still
SELECT or INSERT the column, and there is no way back short of a restore.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import AT
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, cmd in sqlast.alter_table_cmds(stmt.node, AT.AT_DropColumn):
        yield Hit(
            f"DROP COLUMN {table}.{cmd.name} deletes its data and breaks code that still uses it",
            table,
        )


RULE = Rule(
    id="ban-drop-column",
    title="Dropping a column",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Data loss, and failures in the release still running during the deploy.",
    safe_alternative="First release code that no longer uses the column; drop it in a later "
    "migration after a backup.",
    default_level=Risk.high,
    check=check,
)
