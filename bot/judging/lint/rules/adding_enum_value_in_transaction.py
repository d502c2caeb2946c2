"""ALTER TYPE ... ADD VALUE and transactions do not mix.

Before PostgreSQL 12 it cannot run inside a transaction block at all. From 12 it can, but the new
value cannot be used until that transaction commits ("unsafe use of new value"), so a backfill
that uses it in the same transaction, DO block or wrapped file fails.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, Rule, Statement
from bot.judging.verdict import Risk


def _added_value(node: ast.Node) -> str | None:
    if isinstance(node, ast.AlterEnumStmt) and node.oldVal is None and node.newVal:
        return node.newVal
    return None


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if not ctx.in_transaction:
        return
    value = _added_value(stmt.node)
    if value is not None and ctx.options.pg_version < 12:
        yield Hit(
            f"ALTER TYPE {sqlast.dotted(stmt.node.typeName)} ADD VALUE '{value}' cannot run inside "
            f"a transaction block before PostgreSQL 12 (server: {ctx.options.pg_version})"
        )
        return
    added = {_added_value(s.node) for s in ctx.seen} - {None}
    for used in sorted(added & sqlast.string_constants(stmt.node)):
        yield Hit(
            f"uses enum value '{used}' added earlier in the same transaction: PostgreSQL rejects "
            "it until the ADD VALUE has committed"
        )


RULE = Rule(
    id="adding-enum-value-in-transaction",
    title="ALTER TYPE ... ADD VALUE inside a transaction",
    lock=None,
    rewrites=False,
    scans=False,
    why="Fails before PostgreSQL 12; from 12, using the new value before COMMIT fails.",
    safe_alternative="Run ALTER TYPE ... ADD VALUE IF NOT EXISTS on its own (outside BEGIN/COMMIT "
    "or in its own migration) and use the value in a later one.",
    default_level=Risk.high,
    check=check,
)
