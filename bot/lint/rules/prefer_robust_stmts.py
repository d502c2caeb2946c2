"""Statements that fail the second time break migrations that are re-run.

Startup migrations run at every API start, and a failed deploy is retried from the top: CREATE
without IF NOT EXISTS, DROP without IF EXISTS, or ADD CONSTRAINT (which has no IF NOT EXISTS) then
stop the application from starting. Statements under an IF / EXCEPTION guard in a DO block count
as idempotent. Only checked when the policy says the file is re-run (`require_idempotent`).
"""

from collections.abc import Iterator, Sequence

from pglast import ast

from bot.lint import sqlast
from bot.lint.model import Context, Hit, Rule, Statement
from bot.lint.sqlast import AT
from bot.verdict import Risk

_GUARD = "guard it in a DO block (IF NOT EXISTS (SELECT ... FROM information_schema ...))"
_AGAIN = "fails when the migration runs again"


def _dropped_first(table: str, constraint: str, history: Sequence[Statement]) -> bool:
    """`DROP CONSTRAINT IF EXISTS c` earlier makes re-adding c idempotent."""
    return any(
        name == table and cmd.name == constraint and cmd.missing_ok
        for s in history
        for name, cmd in sqlast.alter_table_cmds(s.node, AT.AT_DropConstraint)
    )


def _alter_table(node: ast.Node, history: Sequence[Statement]) -> Iterator[str]:
    for table, cmd in sqlast.alter_table_cmds(node):
        if cmd.subtype == AT.AT_AddColumn and not cmd.missing_ok:
            yield f"ADD COLUMN {cmd.def_.colname} without IF NOT EXISTS {_AGAIN}"
        elif cmd.subtype == AT.AT_DropColumn and not cmd.missing_ok:
            yield f"DROP COLUMN {cmd.name} without IF EXISTS {_AGAIN}"
        elif cmd.subtype == AT.AT_DropConstraint and not cmd.missing_ok:
            yield f"DROP CONSTRAINT {cmd.name} without IF EXISTS {_AGAIN}"
        elif cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            name = cmd.def_.conname
            if not (name and _dropped_first(table, name, history)):
                yield (
                    f"ADD CONSTRAINT {name or '(unnamed)'} {_AGAIN} (it has no IF NOT EXISTS): "
                    f"DROP CONSTRAINT IF EXISTS first, or {_GUARD}"
                )


def _problems(node: ast.Node, history: Sequence[Statement]) -> Iterator[str]:
    match node:
        case ast.CreateStmt() | ast.CreateTableAsStmt() if not node.if_not_exists:
            yield f"CREATE TABLE without IF NOT EXISTS {_AGAIN}"
        case ast.IndexStmt() if not node.idxname:
            yield "CREATE INDEX without a name adds one more duplicate index at every run"
        case ast.IndexStmt() if not node.if_not_exists:
            yield f"CREATE INDEX {node.idxname} without IF NOT EXISTS {_AGAIN}"
        case ast.CreateSeqStmt() | ast.CreateSchemaStmt() if not node.if_not_exists:
            kind = "SEQUENCE" if isinstance(node, ast.CreateSeqStmt) else "SCHEMA"
            yield f"CREATE {kind} without IF NOT EXISTS {_AGAIN}"
        case ast.CreateExtensionStmt() if not node.if_not_exists:
            yield f"CREATE EXTENSION {node.extname} without IF NOT EXISTS {_AGAIN}"
        case ast.DropStmt() if not node.missing_ok:
            kind = node.removeType.name.removeprefix("OBJECT_")
            names = ", ".join(sqlast.dotted(o) for o in node.objects or ())
            yield f"DROP {kind} {names} without IF EXISTS {_AGAIN}"
        case ast.DropdbStmt() if not node.missing_ok:
            yield f"DROP DATABASE without IF EXISTS {_AGAIN}"
        case ast.AlterEnumStmt() if node.oldVal is None and not node.skipIfNewValExists:
            yield f"ALTER TYPE ... ADD VALUE '{node.newVal}' without IF NOT EXISTS {_AGAIN}"
        case ast.CreateEnumStmt() | ast.CompositeTypeStmt() | ast.CreateDomainStmt():
            yield f"CREATE TYPE / DOMAIN {_AGAIN} (it has no IF NOT EXISTS): {_GUARD}"
        case ast.CreateFunctionStmt() | ast.ViewStmt() | ast.CreateTrigStmt() if not node.replace:
            yield f"CREATE without OR REPLACE {_AGAIN}"
        case ast.RenameStmt():
            yield f"RENAME {_AGAIN}: {_GUARD}"
        case ast.AlterTableStmt():
            yield from _alter_table(node, history)


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if not ctx.options.require_idempotent or stmt.guarded:
        return
    for problem in _problems(stmt.node, ctx.history):
        yield Hit(problem)


RULE = Rule(
    id="prefer-robust-stmts",
    title="Statement that fails when the migration is re-run",
    lock=None,
    rewrites=False,
    scans=False,
    why="Re-run migrations (at every API start, or a retried deploy) stop at the first statement "
    "that already took effect.",
    safe_alternative="IF NOT EXISTS / IF EXISTS / OR REPLACE, or a DO block that checks "
    "information_schema / pg_catalog first.",
    default_level=Risk.high,
    check=check,
)
