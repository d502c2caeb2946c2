"""An integer primary key runs out at 2,147,483,647 rows.

When it does, every INSERT fails, and moving to bigint then means rewriting the table and every
table that references it. bigint costs four more bytes per row.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, Rule, Statement
from bot.judging.lint.sqlast import CT
from bot.judging.verdict import Risk

_SMALL = frozenset({"int2", "int4", "smallserial", "serial", "serial2", "serial4"})


def _primary_key_columns(node: ast.Node) -> set[str]:
    keys = {
        column.colname
        for _, column in sqlast.defined_columns(node)
        if sqlast.column_constraints(column, CT.CONSTR_PRIMARY)
    }
    constraints = [
        e for e in getattr(node, "tableElts", None) or () if isinstance(e, ast.Constraint)
    ]
    constraints += [c for _, c in sqlast.added_constraints(node, CT.CONSTR_PRIMARY)]
    for constraint in constraints:
        if constraint.contype == CT.CONSTR_PRIMARY:
            keys.update(k.sval for k in constraint.keys or ())
    return keys


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    keys = _primary_key_columns(stmt.node)
    if not keys:
        return
    table = sqlast.relation(stmt.node.relation)
    types = sqlast.column_types([*ctx.history, stmt], table)
    for key in sorted(keys):
        if key in types and types[key].name in _SMALL:
            yield Hit(f"primary key {table}.{key} is {types[key]}: prefer bigint")


RULE = Rule(
    id="prefer-bigint-over-int",
    title="integer primary key",
    lock=None,
    rewrites=False,
    scans=False,
    why="An int4 key overflows at 2^31 rows; widening it later rewrites the table.",
    safe_alternative="bigint (bigint GENERATED ALWAYS AS IDENTITY for surrogate keys).",
    default_level=Risk.low,
    check=check,
)
