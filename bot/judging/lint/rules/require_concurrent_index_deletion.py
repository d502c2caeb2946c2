"""DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the index's table.

The drop itself is quick, but while it waits for running queries every new query on the table
queues behind it. Indexes this migration created itself are nobody else's yet, so not flagged.
"""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if not (
        isinstance(node, ast.DropStmt)
        and node.removeType == enums.ObjectType.OBJECT_INDEX
        and not node.concurrent
    ):
        return
    created = {
        s.node.idxname for s in ctx.history if isinstance(s.node, ast.IndexStmt) and s.node.idxname
    }
    for obj in node.objects or ():
        name = sqlast.dotted(obj)
        if name.split(".")[-1] not in created:
            yield Hit(
                f"DROP INDEX {name} without CONCURRENTLY takes ACCESS EXCLUSIVE on its table: "
                "every query on it waits"
            )


RULE = Rule(
    id="require-concurrent-index-deletion",
    title="Dropping an index without CONCURRENTLY",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Reads and writes on the table queue behind the drop while it waits for its lock.",
    safe_alternative="DROP INDEX CONCURRENTLY, outside any transaction block.",
    default_level=Risk.medium,
    check=check,
)
