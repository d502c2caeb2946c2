"""VACUUM FULL rewrites the table into a new file while nothing can read or write it.

It also cannot run inside a transaction block. Plain VACUUM (or pg_repack) reclaims space
without blocking traffic.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if not isinstance(node, ast.VacuumStmt) or not any(
        option.defname == "full" for option in node.options or ()
    ):
        return
    tables = [sqlast.relation(r.relation) for r in node.rels or () if r.relation]
    if not tables:
        yield Hit("VACUUM FULL without a table rewrites every table of the database, one by one")
    for table in tables:
        yield Hit(f"VACUUM FULL {table} rewrites the whole table under ACCESS EXCLUSIVE", table)


RULE = Rule(
    id="ban-vacuum-full",
    title="VACUUM FULL",
    lock=LockMode.access_exclusive,
    rewrites=True,
    scans=True,
    why="Reads and writes wait for a complete rewrite of the table.",
    safe_alternative="Plain VACUUM (ANALYZE), or pg_repack / pg_squeeze for an online rewrite.",
    default_level=Risk.high,
    check=check,
)
