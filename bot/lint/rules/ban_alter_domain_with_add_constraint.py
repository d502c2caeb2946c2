"""ALTER DOMAIN ... ADD CONSTRAINT checks every column of every table that uses the domain.

Each of those tables is scanned while writes to it are blocked; NOT VALID skips the scan and
VALIDATE CONSTRAINT does it later without blocking writes.
"""

from collections.abc import Iterator

from pglast import ast

from bot.lint import sqlast
from bot.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if (
        isinstance(node, ast.AlterDomainStmt)
        and node.subtype == "C"
        and isinstance(node.def_, ast.Constraint)
        and not node.def_.skip_validation
    ):
        yield Hit(
            f"ALTER DOMAIN {sqlast.dotted(node.typeName)} ADD CONSTRAINT scans every table "
            "using the domain while writes to them wait"
        )


RULE = Rule(
    id="ban-alter-domain-with-add-constraint",
    title="Adding a domain constraint without NOT VALID",
    lock=LockMode.share,
    rewrites=False,
    scans=True,
    why="Writes to every table using the domain wait for a scan of all of them.",
    safe_alternative="ALTER DOMAIN ... ADD CONSTRAINT ... NOT VALID; then VALIDATE CONSTRAINT in "
    "a later transaction.",
    default_level=Risk.medium,
    check=check,
)
