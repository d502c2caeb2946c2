"""Statements that fail the second time break migrations that are re-run.

Startup migrations run at every API start, and a failed deploy is retried from the top: CREATE
without IF NOT EXISTS, DROP without IF EXISTS, or ADD CONSTRAINT (which has no IF NOT EXISTS) then
stop the application from starting. Statements under an IF / EXCEPTION guard in a DO block count
as idempotent, and so does a CREATE that an earlier `DROP ... IF EXISTS` of the same object
clears the way for (`DROP TRIGGER IF EXISTS t ON x; CREATE TRIGGER t ...`: running the file twice
succeeds). Only checked when the policy says the file is re-run (`require_idempotent`).
"""

from collections.abc import Iterator, Sequence

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, Rule, Statement
from bot.judging.lint.sqlast import AT
from bot.judging.verdict import Risk

_GUARD = "guard it in a DO block (IF NOT EXISTS (SELECT ... FROM information_schema ...))"
_AGAIN = "fails when the migration runs again"
OT = enums.ObjectType
# Objects named within a table: a trigger or policy `t` on `x` is ('x', 't').
_ON_TABLE = {OT.OBJECT_TRIGGER, OT.OBJECT_POLICY}


def _created(node: ast.Node) -> tuple[OT, tuple[str, ...]] | None:
    """The kind and (unqualified) name of the object a CREATE statement makes, if any."""
    match node:
        case ast.CreateTrigStmt():
            return OT.OBJECT_TRIGGER, (node.relation.relname, node.trigname)
        case ast.CreatePolicyStmt():
            return OT.OBJECT_POLICY, (node.table.relname, node.policy_name)
        case ast.IndexStmt() if node.idxname:
            return OT.OBJECT_INDEX, (node.idxname,)
        case ast.ViewStmt():
            return OT.OBJECT_VIEW, (node.view.relname,)
        case ast.CreateTableAsStmt():
            return node.objtype, (node.into.rel.relname,)
        case ast.CreateStmt():
            return OT.OBJECT_TABLE, (node.relation.relname,)
        case ast.CreateFunctionStmt():
            kind = OT.OBJECT_PROCEDURE if node.is_procedure else OT.OBJECT_FUNCTION
            return kind, (node.funcname[-1].sval,)
        case ast.CreateEnumStmt() | ast.CompositeTypeStmt():
            names = node.typeName if isinstance(node, ast.CreateEnumStmt) else None
            name = names[-1].sval if names else node.typevar.relname
            return OT.OBJECT_TYPE, (name,)
        case ast.CreateDomainStmt():
            return OT.OBJECT_DOMAIN, (node.domainname[-1].sval,)
        case ast.CreateSeqStmt():
            return OT.OBJECT_SEQUENCE, (node.sequence.relname,)
    return None


def _dropped_if_exists(node: ast.Node) -> Iterator[tuple[OT, tuple[str, ...]]]:
    """(kind, unqualified name) of each object a `DROP ... IF EXISTS` removes."""
    if not isinstance(node, ast.DropStmt) or not node.missing_ok:
        return
    for target in node.objects or ():
        if isinstance(target, ast.ObjectWithArgs):
            names = target.objname
        elif isinstance(target, ast.TypeName):
            names = target.names
        else:
            names = target if isinstance(target, tuple) else (target,)
        parts = tuple(n.sval for n in names if isinstance(n, ast.String))
        yield node.removeType, parts[-2:] if node.removeType in _ON_TABLE else parts[-1:]


def _recreated(node: ast.Node, history: Sequence[Statement]) -> bool:
    """An earlier `DROP ... IF EXISTS` of the object this CREATE makes: the pair re-runs."""
    made = _created(node)
    return made is not None and any(made in set(_dropped_if_exists(s.node)) for s in history)


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
            yield f"CREATE without OR REPLACE {_AGAIN}: DROP ... IF EXISTS first, or OR REPLACE"
        case ast.CreatePolicyStmt():
            yield (
                f"CREATE POLICY {node.policy_name} {_AGAIN} (it has no IF NOT EXISTS): "
                f"DROP POLICY IF EXISTS first, or {_GUARD}"
            )
        case ast.RenameStmt():
            yield f"RENAME {_AGAIN}: {_GUARD}"
        case ast.AlterTableStmt():
            yield from _alter_table(node, history)


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if not ctx.options.require_idempotent or stmt.guarded or _recreated(stmt.node, ctx.history):
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
