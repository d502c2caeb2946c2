"""CREATE INDEX without CONCURRENTLY blocks every write to the table for the whole build.

It takes a SHARE lock, which conflicts with INSERT/UPDATE/DELETE, and holds it while it reads the
entire table and sorts it: minutes on a large table. A table created by the same migration is
empty and unseen by anyone, so the engine drops findings about it.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if isinstance(node, ast.IndexStmt) and not node.concurrent:
        table = sqlast.relation(node.relation)
        index = f"CREATE INDEX {node.idxname}" if node.idxname else "CREATE INDEX"
        yield Hit(
            f"{index} on {table} without CONCURRENTLY blocks writes to the table while the "
            "index is built",
            table,
        )


RULE = Rule(
    id="require-concurrent-index-creation",
    title="Creating an index without CONCURRENTLY",
    lock=LockMode.share,
    rewrites=False,
    scans=True,
    why="Writes to the table wait for a full read and sort of the table.",
    safe_alternative="CREATE INDEX CONCURRENTLY, outside any transaction block (it cannot run "
    "inside one); on failure it leaves an INVALID index to drop and retry.",
    default_level=Risk.medium,
    check=check,
)
