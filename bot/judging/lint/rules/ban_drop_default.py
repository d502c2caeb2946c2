"""Dropping the default of a NOT NULL column breaks the INSERTs of the running release.

The release still serving traffic during the deploy does not know the column and leaves it out
of its INSERTs; while the column has a default that works, and from the moment DROP DEFAULT
commits each of them fails with a not-null violation. Django's AddField does exactly this (ADD
COLUMN ... DEFAULT x NOT NULL, then DROP DEFAULT). Whether a column is NOT NULL is known when this
migration declares it; otherwise the finding is a low-level note.
"""

from collections.abc import Iterator, Sequence

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import AT, OT
from bot.judging.verdict import Risk


def _not_null(table: str, column: str, nodes: Sequence[ast.Node]) -> bool | None:
    """What this migration says about the column's NOT NULL, up to now (None: nothing)."""
    state = None
    for node in nodes:
        for name, defined in sqlast.defined_columns(node):
            if name == table and defined.colname == column:
                state = sqlast.is_not_null(defined)
        for name, cmd in sqlast.alter_table_cmds(node, AT.AT_SetNotNull, AT.AT_DropNotNull):
            if name == table and cmd.name == column:
                state = cmd.subtype == AT.AT_SetNotNull
    return state


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != OT.OBJECT_TABLE:
        return
    table = sqlast.relation(node.relation)
    earlier = [s.node for s in ctx.history]
    cmds = node.cmds or ()
    for index, cmd in enumerate(cmds):
        if not (
            isinstance(cmd, ast.AlterTableCmd)
            and cmd.subtype == AT.AT_ColumnDefault
            and cmd.def_ is None
        ):
            continue
        # The commands before this one in the same ALTER TABLE count too.
        before = ast.AlterTableStmt(relation=node.relation, cmds=cmds[:index], objtype=node.objtype)
        not_null = _not_null(table, cmd.name, [*earlier, before])
        if not_null is False:
            continue
        if not_null:
            yield Hit(
                f"DROP DEFAULT on NOT NULL column {table}.{cmd.name}: INSERTs of the running "
                f"release, which leave {cmd.name} out, fail until the new release is deployed",
                table,
            )
        else:
            yield Hit(
                f"DROP DEFAULT on {table}.{cmd.name}: if the column is NOT NULL, INSERTs that "
                "leave it out (the running release's) fail",
                table,
                level=Risk.low,
            )


RULE = Rule(
    id="ban-drop-default",
    title="Dropping the default of a NOT NULL column",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="The release still running during the deploy inserts rows without the column and fails.",
    safe_alternative="Keep the default until every running release writes the column, and drop "
    "it in a later migration (Django 5: db_default keeps it in the database).",
    default_level=Risk.high,
    check=check,
)
