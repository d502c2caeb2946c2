"""Renaming a column breaks the code that is running while the migration is applied.

During a deploy the old release still serves traffic and still names the old column; from the
moment the rename commits each of its queries fails. The rename itself is instant, but it needs
ACCESS EXCLUSIVE and queues behind running queries.
"""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if (
        isinstance(node, ast.RenameStmt)
        and node.renameType == enums.ObjectType.OBJECT_COLUMN
        and node.relationType == enums.ObjectType.OBJECT_TABLE
    ):
        table = sqlast.relation(node.relation)
        yield Hit(
            f"RENAME COLUMN {table}.{node.subname} TO {node.newname} breaks running code that "
            f"still uses {node.subname}",
            table,
        )


RULE = Rule(
    id="renaming-column",
    title="Renaming a column",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="The release still running during the deploy queries the old name and fails.",
    safe_alternative="Add the new column, dual-write and backfill, move reads, and drop the old "
    "column in a later release (or keep a view with the old name during the transition).",
    default_level=Risk.high,
    check=check,
)
