"""CLUSTER rewrites the table in index order while nothing can read or write it."""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if isinstance(node, ast.ClusterStmt):
        if node.relation is None:
            yield Hit("CLUSTER without a table rewrites every previously clustered table")
            return
        table = sqlast.relation(node.relation)
        yield Hit(f"CLUSTER {table} rewrites the whole table under ACCESS EXCLUSIVE", table)


RULE = Rule(
    id="ban-cluster",
    title="CLUSTER",
    lock=LockMode.access_exclusive,
    rewrites=True,
    scans=True,
    why="Reads and writes wait for a complete rewrite of the table.",
    safe_alternative="pg_repack --order-by for an online reorder, or leave the order alone.",
    default_level=Risk.high,
    check=check,
)
