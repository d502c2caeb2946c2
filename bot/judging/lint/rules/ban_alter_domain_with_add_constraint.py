"""ALTER DOMAIN ... ADD CONSTRAINT checks every column of every table that uses the domain.

Each of those tables is scanned under a SHARE lock, so writes to them wait. NOT VALID skips the
scan (and takes no lock on the tables: only new and updated values are checked), but unlike
ALTER TABLE's, ALTER DOMAIN ... VALIDATE CONSTRAINT scans under that same SHARE lock (checked on
PostgreSQL 18): a domain constraint cannot be validated without blocking writes.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    node = stmt.node
    if not isinstance(node, ast.AlterDomainStmt):
        return
    domain = sqlast.dotted(node.typeName)
    if (
        node.subtype == "C"
        and isinstance(node.def_, ast.Constraint)
        and not node.def_.skip_validation
    ):
        yield Hit(
            f"ALTER DOMAIN {domain} ADD CONSTRAINT scans every table using the domain while "
            "writes to them wait"
        )
    elif node.subtype == "V":
        yield Hit(
            f"ALTER DOMAIN {domain} VALIDATE CONSTRAINT {node.name} scans every table using the "
            "domain under SHARE: writes to them wait (unlike ALTER TABLE ... VALIDATE CONSTRAINT)"
        )


RULE = Rule(
    id="ban-alter-domain-with-add-constraint",
    title="Adding or validating a domain constraint",
    lock=LockMode.share,
    rewrites=False,
    scans=True,
    why="Writes to every table using the domain wait for a scan of all of them; VALIDATE "
    "CONSTRAINT of a domain blocks writes too.",
    safe_alternative="ALTER DOMAIN ... ADD CONSTRAINT ... NOT VALID and leave it so (new and "
    "updated values are checked), or use CHECK constraints on the tables' columns: ADD "
    "CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT (SHARE UPDATE EXCLUSIVE).",
    default_level=Risk.medium,
    check=check,
)
