"""TRUNCATE deletes every row at once, under ACCESS EXCLUSIVE, with no WHERE to limit it."""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if isinstance(node, ast.TruncateStmt):
        cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
        also = " and of every table referencing it (CASCADE)" if cascade else ""
        for rv in node.relations or ():
            table = sqlast.relation(rv)
            yield Hit(f"TRUNCATE {table} deletes all rows of {table}{also}", table)


RULE = Rule(
    id="ban-truncate",
    title="Truncating a table",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Irreversible loss of all rows (and of referencing tables' rows with CASCADE).",
    safe_alternative="DELETE the rows you mean, with a WHERE clause, in batches, after a backup.",
    default_level=Risk.critical,
    check=check,
)
