"""A validated foreign key checks every existing row while both tables refuse writes.

ADD FOREIGN KEY takes SHARE ROW EXCLUSIVE on the table and on the referenced table, then scans
the table to check each row; with NOT VALID it only registers the constraint (new rows are
checked at once) and VALIDATE CONSTRAINT later scans under a lock that lets writes through.

`ADD COLUMN ... REFERENCES` is only checked when the new column has a default: without one every
row holds NULL and PostgreSQL skips the validation (parse_utilcmd.c, transformAlterTableStmt); with
one it scans the table under ADD COLUMN's ACCESS EXCLUSIVE.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import CT
from bot.judging.verdict import Risk


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, constraint in sqlast.added_constraints(stmt.node, CT.CONSTR_FOREIGN):
        if constraint.skip_validation:
            continue
        name = constraint.conname or "foreign key"
        yield Hit(
            f"ADD CONSTRAINT {name} FOREIGN KEY on {table} (-> "
            f"{sqlast.relation(constraint.pktable)}) validates every row while writes to both "
            "tables are blocked",
            table,
        )
    for table, column in sqlast.added_columns(stmt.node):
        defaults = [
            c
            for c in sqlast.column_constraints(column, CT.CONSTR_DEFAULT)
            if not (isinstance(c.raw_expr, ast.A_Const) and c.raw_expr.isnull)
        ]
        if not defaults:
            continue
        for constraint in sqlast.column_constraints(column, CT.CONSTR_FOREIGN):
            yield Hit(
                f"ADD COLUMN {column.colname} DEFAULT ... REFERENCES "
                f"{sqlast.relation(constraint.pktable)} validates the default against every row "
                f"of {table} under ACCESS EXCLUSIVE",
                table,
                safe_alternative="ADD COLUMN without the REFERENCES (or without the default); then "
                "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID and VALIDATE CONSTRAINT in a later "
                "transaction.",
            )


RULE = Rule(
    id="adding-foreign-key-constraint",
    title="Adding a foreign key without NOT VALID",
    lock=LockMode.share_row_exclusive,
    rewrites=False,
    scans=True,
    why="Writes to the table and to the referenced table wait for a scan of the whole table.",
    safe_alternative="ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID; then, in a later "
    "transaction, VALIDATE CONSTRAINT (SHARE UPDATE EXCLUSIVE: writes go on).",
    default_level=Risk.medium,
    check=check,
)
