"""Dropping a schema drops (with CASCADE) every table, view and function in it."""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_SCHEMA:
        cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
        for obj in node.objects or ():
            everything = " and everything in it" if cascade else ""
            yield Hit(f"DROP SCHEMA {sqlast.dotted(obj)} deletes the schema{everything}")


RULE = Rule(
    id="ban-drop-schema",
    title="Dropping a schema",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Irreversible loss of every object in the schema.",
    safe_alternative="Drop the objects one by one in reviewed migrations, after backups.",
    default_level=Risk.critical,
    check=check,
)
