"""A validated foreign key checks every existing row while both tables refuse writes.

ADD FOREIGN KEY takes SHARE ROW EXCLUSIVE on the table and on the referenced table, then scans
the table to check each row; with NOT VALID it only registers the constraint (new rows are
checked at once) and VALIDATE CONSTRAINT later scans under a lock that lets writes through.
"""

from collections.abc import Iterator

from bot.lint import sqlast
from bot.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.lint.sqlast import CT
from bot.verdict import Risk


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
