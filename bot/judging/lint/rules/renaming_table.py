"""Renaming a table breaks the code that is running while the migration is applied.

Every query of the release still serving traffic names the old table and fails as soon as the
rename commits.
"""

from collections.abc import Iterator

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if isinstance(node, ast.RenameStmt) and node.renameType == enums.ObjectType.OBJECT_TABLE:
        table = sqlast.relation(node.relation)
        yield Hit(
            f"RENAME {table} TO {node.newname} breaks running code that still uses {table}",
            table,
        )


RULE = Rule(
    id="renaming-table",
    title="Renaming a table",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=False,
    why="The release still running during the deploy queries the old name and fails.",
    safe_alternative="Rename and, in the same transaction, CREATE VIEW old_name AS SELECT * FROM "
    "new_name (simple views are updatable); drop the view once no code uses the old name.",
    default_level=Risk.high,
    check=check,
)
