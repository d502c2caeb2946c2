"""Reading pglast's AST the way several rules need to: names, column types, locks.

pglast hands back PostgreSQL's raw parse tree, so `integer` arrives as `pg_catalog.int4` and a
column's NOT NULL may be a flag or a constraint; these helpers absorb that once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums, parse_sql

from bot.judging.lint.model import Lock, LockMode, Statement

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType

# Names people write, for the internal names the parser produces.
_DISPLAY = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bpchar": "char",
    "bool": "boolean",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
}
SERIAL_TYPES = frozenset({"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8"})


@dataclass(frozen=True)
class PgType:
    name: str
    mods: tuple[int, ...] = ()
    array: bool = False

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.mods))})" if self.mods else ""
        return f"{_DISPLAY.get(self.name, self.name)}{mods}{'[]' if self.array else ''}"


def pg_type(type_name: ast.TypeName) -> PgType:
    mods = tuple(
        m.val.ival
        for m in type_name.typmods or ()
        if isinstance(m, ast.A_Const) and isinstance(m.val, ast.Integer)
    )
    return PgType(type_name.names[-1].sval, mods, bool(type_name.arrayBounds))


@functools.cache
def parse_type(text: str) -> PgType | None:
    """A catalog type (`character varying(255)`, `integer[]`) as the parser names it."""
    try:
        (stmt,) = parse_sql(f"SELECT NULL::{text}")
    except Exception:  # a type the parser does not take: no comparison rather than a crash
        return None
    target = stmt.stmt.targetList[0].val
    return pg_type(target.typeName) if isinstance(target, ast.TypeCast) else None


def relation(rv: ast.RangeVar) -> str:
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else rv.relname


def dotted(names: Any) -> str:
    """Join a parser name list (`(String, String)`), a String or a TypeName into `a.b`."""
    if isinstance(names, ast.String):
        return names.sval
    if isinstance(names, ast.TypeName):
        names = names.names
    return ".".join(n.sval for n in names if isinstance(n, ast.String))


def walk(node: Any) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from walk(getattr(node, attr))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from walk(item)


def string_constants(node: ast.Node) -> set[str]:
    return {
        n.val.sval
        for n in walk(node)
        if isinstance(n, ast.A_Const) and isinstance(n.val, ast.String)
    }


def alter_table_cmds(node: ast.Node, *subtypes: AT) -> Iterator[tuple[str, ast.AlterTableCmd]]:
    """`ALTER TABLE t <cmd>, <cmd>`'s commands of the given kinds, with the table's name."""
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != OT.OBJECT_TABLE:
        return
    for cmd in node.cmds or ():
        if isinstance(cmd, ast.AlterTableCmd) and (not subtypes or cmd.subtype in subtypes):
            yield relation(node.relation), cmd


def added_constraints(node: ast.Node, *kinds: CT) -> Iterator[tuple[str, ast.Constraint]]:
    """`ALTER TABLE t ADD CONSTRAINT ...` of the given kinds."""
    for table, cmd in alter_table_cmds(node, AT.AT_AddConstraint):
        if isinstance(cmd.def_, ast.Constraint) and cmd.def_.contype in kinds:
            yield table, cmd.def_


def added_columns(node: ast.Node) -> Iterator[tuple[str, ast.ColumnDef]]:
    """`ALTER TABLE t ADD COLUMN ...`: columns added to a table that may hold rows."""
    for table, cmd in alter_table_cmds(node, AT.AT_AddColumn):
        if isinstance(cmd.def_, ast.ColumnDef):
            yield table, cmd.def_


def defined_columns(node: ast.Node) -> Iterator[tuple[str, ast.ColumnDef]]:
    """Columns a statement declares: CREATE TABLE's and ALTER TABLE ADD COLUMN's."""
    if isinstance(node, ast.CreateStmt):
        for element in node.tableElts or ():
            if isinstance(element, ast.ColumnDef):
                yield relation(node.relation), element
    else:
        yield from added_columns(node)


def column_constraints(column: ast.ColumnDef, *kinds: CT) -> list[ast.Constraint]:
    return [
        c for c in column.constraints or () if isinstance(c, ast.Constraint) and c.contype in kinds
    ]


def is_not_null(column: ast.ColumnDef) -> bool:
    return bool(column.is_not_null) or bool(
        column_constraints(column, CT.CONSTR_NOTNULL, CT.CONSTR_PRIMARY)
    )


def column_types(statements: Iterable[Statement], table: str) -> dict[str, PgType]:
    """Column types this migration declared for `table` so far (later ALTER TYPE wins)."""
    types: dict[str, PgType] = {}
    for stmt in statements:
        for name, column in defined_columns(stmt.node):
            if name == table and column.typeName is not None:
                types[column.colname] = pg_type(column.typeName)
        for name, cmd in alter_table_cmds(stmt.node, AT.AT_AlterColumnType):
            if name == table and isinstance(cmd.def_, ast.ColumnDef):
                types[cmd.name] = pg_type(cmd.def_.typeName)
    return types


_SHARE_UPDATE_EXCLUSIVE_CMDS = frozenset(
    {
        AT.AT_SetStatistics,
        AT.AT_SetOptions,
        AT.AT_ResetOptions,
        AT.AT_ClusterOn,
        AT.AT_DropCluster,
        AT.AT_SetRelOptions,
        AT.AT_ResetRelOptions,
        AT.AT_ValidateConstraint,
        AT.AT_AttachPartition,
    }
)
_SHARE_ROW_EXCLUSIVE_CMDS = frozenset(
    {
        AT.AT_EnableTrig,
        AT.AT_EnableAlwaysTrig,
        AT.AT_EnableReplicaTrig,
        AT.AT_DisableTrig,
        AT.AT_EnableTrigAll,
        AT.AT_DisableTrigAll,
        AT.AT_EnableTrigUser,
        AT.AT_DisableTrigUser,
    }
)
_LOCK_STMT_MODES = {i + 1: mode for i, mode in enumerate(LockMode)}


def _alter_cmd_lock(cmd: ast.AlterTableCmd) -> LockMode:
    if cmd.subtype in _SHARE_UPDATE_EXCLUSIVE_CMDS:
        return LockMode.share_update_exclusive
    if cmd.subtype == AT.AT_DetachPartition and getattr(cmd.def_, "concurrent", False):
        return LockMode.share_update_exclusive
    if cmd.subtype in _SHARE_ROW_EXCLUSIVE_CMDS or (
        isinstance(cmd.def_, ast.Constraint) and cmd.def_.contype == CT.CONSTR_FOREIGN
    ):
        return LockMode.share_row_exclusive
    return LockMode.access_exclusive


def _referenced_tables(node: ast.Node) -> list[str]:
    return [
        relation(c.pktable)
        for c in walk(node)
        if isinstance(c, ast.Constraint) and c.contype == CT.CONSTR_FOREIGN and c.pktable
    ]


def locks(node: ast.Node) -> list[Lock]:
    """Table locks a DDL statement takes, per the lock table of the PostgreSQL docs.

    Plain DML (ROW EXCLUSIVE and weaker) is left out: it never waits behind traffic.
    """
    match node:
        case ast.AlterTableStmt(objtype=OT.OBJECT_TABLE):
            modes = [
                _alter_cmd_lock(c) for c in node.cmds or () if isinstance(c, ast.AlterTableCmd)
            ]
            found = (
                [Lock(relation(node.relation), max(modes, key=lambda m: m.rank))] if modes else []
            )
            referenced = _referenced_tables(node.cmds)
            return found + [Lock(t, LockMode.share_row_exclusive) for t in referenced]
        case ast.RenameStmt(relation=ast.RangeVar() as rv):
            index = node.renameType == OT.OBJECT_INDEX
            mode = LockMode.share_update_exclusive if index else LockMode.access_exclusive
            return [Lock(relation(rv), mode, index=index)]
        case ast.IndexStmt():
            concurrent = LockMode.share_update_exclusive
            return [
                Lock(relation(node.relation), concurrent if node.concurrent else LockMode.share)
            ]
        case ast.DropStmt(removeType=OT.OBJECT_TABLE | OT.OBJECT_VIEW | OT.OBJECT_MATVIEW):
            return [Lock(dotted(o), LockMode.access_exclusive) for o in node.objects or ()]
        case ast.DropStmt(removeType=OT.OBJECT_INDEX):
            mode = LockMode.share_update_exclusive if node.concurrent else LockMode.access_exclusive
            return [Lock(dotted(o), mode, index=True) for o in node.objects or ()]
        case ast.TruncateStmt():
            return [Lock(relation(rv), LockMode.access_exclusive) for rv in node.relations or ()]
        case ast.VacuumStmt():
            full = any(o.defname == "full" for o in node.options or ())
            mode = LockMode.access_exclusive if full else LockMode.share_update_exclusive
            return [Lock(relation(r.relation), mode) for r in node.rels or () if r.relation]
        case ast.ClusterStmt(relation=ast.RangeVar() as rv):
            return [Lock(relation(rv), LockMode.access_exclusive)]
        case ast.ReindexStmt(relation=ast.RangeVar() as rv):
            if any(p.defname == "concurrently" for p in node.params or ()):
                return [Lock(relation(rv), LockMode.share_update_exclusive)]
            index = node.kind == enums.ReindexObjectType.REINDEX_OBJECT_INDEX
            mode = LockMode.access_exclusive if index else LockMode.share
            return [Lock(relation(rv), mode, index=index)]
        case ast.CreateTrigStmt():
            return [Lock(relation(node.relation), LockMode.share_row_exclusive)]
        case ast.CreateStmt():
            return [Lock(t, LockMode.share_row_exclusive) for t in _referenced_tables(node)]
        case ast.LockStmt():
            mode = _LOCK_STMT_MODES[node.mode]
            return [Lock(relation(rv), mode) for rv in node.relations or ()]
        case ast.RefreshMatViewStmt():
            mode = LockMode.exclusive if node.concurrent else LockMode.access_exclusive
            return [Lock(relation(node.relation), mode)]
    return []
