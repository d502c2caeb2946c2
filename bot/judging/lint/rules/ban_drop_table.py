"""Dropping a table destroys its data and breaks code that still uses it.

Tables created by the same migration are not flagged: dropping a scratch table is fine.
"""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_TABLE:
        for obj in node.objects or ():
            table = sqlast.dotted(obj)
            yield Hit(f"DROP TABLE {table} deletes all of its data", table)


RULE = Rule(
    id="ban-drop-table",
    title="Dropping a table",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Irreversible data loss; running code that uses the table fails.",
    safe_alternative="Stop using the table in a release first; rename it aside (or back it up) "
    "and drop it in a later migration.",
    default_level=Risk.critical,
    check=check,
)
