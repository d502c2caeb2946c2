"""REINDEX without CONCURRENTLY blocks writes to the table and reads through the index.

It holds SHARE on the table and ACCESS EXCLUSIVE on the index while rebuilding it from a full
read of the table. PostgreSQL 12 added REINDEX CONCURRENTLY.
"""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if not isinstance(node, ast.ReindexStmt) or any(
        p.defname == "concurrently" for p in node.params or ()
    ):
        return
    target = sqlast.relation(node.relation) if node.relation else node.name or "the database"
    alternative = (
        None
        if ctx.options.pg_version >= 12
        else "CREATE INDEX CONCURRENTLY a replacement index, then DROP INDEX CONCURRENTLY the old "
        "one (REINDEX CONCURRENTLY needs PostgreSQL 12)."
    )
    on_table = node.kind == enums.ReindexObjectType.REINDEX_OBJECT_TABLE
    yield Hit(
        f"REINDEX {target} without CONCURRENTLY blocks writes while the index is rebuilt",
        target if on_table else None,
        safe_alternative=alternative,
    )


RULE = Rule(
    id="require-concurrent-reindex",
    title="REINDEX without CONCURRENTLY",
    lock=LockMode.share,
    rewrites=False,
    scans=True,
    why="Writes (and reads using the index) wait for a full rebuild.",
    safe_alternative="REINDEX ... CONCURRENTLY, outside any transaction block.",
    default_level=Risk.medium,
    check=check,
)
