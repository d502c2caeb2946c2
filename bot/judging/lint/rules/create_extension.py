"""CREATE EXTENSION depends on the server, not only on the migration.

The extension's files must be installed on the server (managed providers allow-list them), and
creating it needs superuser or, for trusted extensions, CREATE on the database: a migration that
works on a developer's superuser database can fail in production.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint.model import Context, Hit, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    if isinstance(stmt.node, ast.CreateExtensionStmt):
        yield Hit(
            f"CREATE EXTENSION {stmt.node.extname} needs the extension installed on the server "
            "and enough privileges for the migration's role"
        )


RULE = Rule(
    id="create-extension",
    title="Creating an extension",
    lock=None,
    rewrites=False,
    scans=False,
    why="Fails where the extension is not available or the role is not privileged enough.",
    safe_alternative="Check the extension is available on the production server and provider; "
    "have it created once by an administrator, and use CREATE EXTENSION IF NOT EXISTS.",
    default_level=Risk.medium,
    check=check,
)
