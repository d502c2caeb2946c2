"""A migration has no business dropping a database."""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if isinstance(stmt.node, ast.DropdbStmt):
        yield Hit(f"DROP DATABASE {stmt.node.dbname} deletes the whole database")


RULE = Rule(
    id="ban-drop-database",
    title="Dropping a database",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="Irreversible loss of everything.",
    safe_alternative="Do it by hand, outside migrations, after a backup.",
    default_level=Risk.critical,
    check=check,
)
