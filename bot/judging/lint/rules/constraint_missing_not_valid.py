"""A CHECK constraint is validated against every row while the table is locked.

ADD CONSTRAINT ... CHECK takes ACCESS EXCLUSIVE and scans the table. NOT VALID skips the scan,
and VALIDATE CONSTRAINT does it later under SHARE UPDATE EXCLUSIVE — but only if it runs in a
later transaction: in the same one, the ADD's lock is still held during the scan.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import AT, CT
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, constraint in sqlast.added_constraints(stmt.node, CT.CONSTR_CHECK):
        if not constraint.skip_validation:
            yield Hit(
                f"ADD CONSTRAINT {constraint.conname or 'check'} CHECK without NOT VALID scans "
                f"{table} under ACCESS EXCLUSIVE",
                table,
            )
    validated = list(sqlast.alter_table_cmds(stmt.node, AT.AT_ValidateConstraint))
    if not validated:
        return
    not_valid = {
        (table, c.conname)
        for earlier in [*ctx.seen, stmt]
        for table, c in sqlast.added_constraints(earlier.node, CT.CONSTR_CHECK, CT.CONSTR_FOREIGN)
        if c.skip_validation
    }
    for table, cmd in validated:
        if (table, cmd.name) in not_valid:
            yield Hit(
                f"VALIDATE CONSTRAINT {cmd.name} runs in the same transaction as its ADD ... NOT "
                "VALID: the scan happens while the ADD's lock is still held",
                table,
                safe_alternative="COMMIT after ADD CONSTRAINT ... NOT VALID and validate in a "
                "separate transaction (or a later migration).",
            )


RULE = Rule(
    id="constraint-missing-not-valid",
    title="Adding a CHECK constraint without NOT VALID",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=True,
    why="Reads and writes wait while every row is checked.",
    safe_alternative="ADD CONSTRAINT ... CHECK (...) NOT VALID; then, in a later transaction, "
    "VALIDATE CONSTRAINT (SHARE UPDATE EXCLUSIVE: reads and writes go on).",
    default_level=Risk.medium,
    check=check,
)
