"""CONCURRENTLY index operations refuse to run inside a transaction block.

CREATE/DROP/REINDEX ... CONCURRENTLY and DETACH PARTITION CONCURRENTLY commit internally several
times, so PostgreSQL raises an error inside BEGIN ... COMMIT, inside a DO block or function, and
under a runner that wraps the file in one transaction: the migration fails.
"""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import AT
from bot.judging.verdict import Risk


def _concurrent_operation(node: ast.Node) -> str | None:
    match node:
        case ast.IndexStmt(concurrent=True):
            return "CREATE INDEX CONCURRENTLY"
        case ast.DropStmt(removeType=enums.ObjectType.OBJECT_INDEX, concurrent=True):
            return "DROP INDEX CONCURRENTLY"
        case ast.ReindexStmt() if any(p.defname == "concurrently" for p in node.params or ()):
            return "REINDEX CONCURRENTLY"
    for _, cmd in sqlast.alter_table_cmds(node, AT.AT_DetachPartition):
        if getattr(cmd.def_, "concurrent", False):
            return "DETACH PARTITION CONCURRENTLY"
    return None


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    operation = _concurrent_operation(stmt.node)
    if operation and ctx.in_transaction:
        where = f"a {stmt.routine}" if stmt.routine else "a transaction block"
        yield Hit(f"{operation} cannot run inside {where}: the migration fails")


RULE = Rule(
    id="ban-concurrent-index-creation-in-transaction",
    title="CONCURRENTLY inside a transaction",
    lock=LockMode.share_update_exclusive,
    rewrites=False,
    scans=False,
    why="PostgreSQL rejects CONCURRENTLY in a transaction block, DO block or function.",
    safe_alternative="Run the statement on its own, outside BEGIN/COMMIT and outside DO blocks "
    "(e.g. a separate migration file marked non-transactional).",
    default_level=Risk.high,
    check=check,
)
