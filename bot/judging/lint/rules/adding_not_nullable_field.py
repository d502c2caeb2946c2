"""SET NOT NULL reads the whole table under ACCESS EXCLUSIVE to prove there is no NULL.

From PostgreSQL 12 the scan is skipped when a validated `CHECK (col IS NOT NULL)` already proves
it; PostgreSQL 18 can also add the NOT NULL constraint itself as NOT VALID and validate it later
under a weaker lock. Without either, reads and writes wait for a full scan.
"""

from collections.abc import Iterator, Sequence

from pglast import ast, enums

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import AT, CT
from bot.judging.verdict import Risk


def _asserts_not_null(constraint: ast.Constraint, column: str) -> bool:
    if constraint.contype == CT.CONSTR_NOTNULL:
        return column in {k.sval for k in constraint.keys or ()}
    expr = constraint.raw_expr
    return (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == enums.NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
        and expr.arg.fields[-1].sval == column
    )


def _proven(table: str, column: str, statements: Sequence[Statement]) -> bool:
    """A validated constraint earlier in the migration already says the column has no NULL."""
    pending: set[str] = set()
    for stmt in statements:
        for name, constraint in sqlast.added_constraints(
            stmt.node, CT.CONSTR_CHECK, CT.CONSTR_NOTNULL
        ):
            if name == table and _asserts_not_null(constraint, column):
                if not constraint.skip_validation:
                    return True
                pending.add(constraint.conname)
        for name, cmd in sqlast.alter_table_cmds(stmt.node, AT.AT_ValidateConstraint):
            if name == table and cmd.name in pending:
                return True
    return False


def _alternative(table: str, column: str, pg_version: int) -> str:
    if pg_version >= 18:
        return (
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_not_null NOT NULL {column} "
            f"NOT VALID; then, in a later transaction, ALTER TABLE {table} VALIDATE CONSTRAINT "
            f"{table}_{column}_not_null (SHARE UPDATE EXCLUSIVE: reads and writes go on)."
        )
    if pg_version >= 12:
        return RULE.safe_alternative
    return (
        "Before PostgreSQL 12 the scan cannot be avoided: run it in a quiet window with a short "
        "lock_timeout and retries."
    )


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    # SET NOT NULL may follow its proof in the same statement; a NOT NULL constraint must not
    # count as its own proof.
    set_not_null = [
        (table, cmd.name, [*ctx.history, stmt])
        for table, cmd in sqlast.alter_table_cmds(stmt.node, AT.AT_SetNotNull)
    ]
    add_not_null = [
        (table, key.sval, ctx.history)
        for table, c in sqlast.added_constraints(stmt.node, CT.CONSTR_NOTNULL)
        if not c.skip_validation
        for key in c.keys or ()
    ]
    for table, column, earlier in set_not_null + add_not_null:
        if ctx.options.pg_version >= 12 and _proven(table, column, earlier):
            continue
        yield Hit(
            f"making {table}.{column} NOT NULL scans the whole table under ACCESS EXCLUSIVE "
            "to look for NULLs",
            table,
            safe_alternative=_alternative(table, column, ctx.options.pg_version),
        )


RULE = Rule(
    id="adding-not-nullable-field",
    title="SET NOT NULL without a validated CHECK constraint",
    lock=LockMode.access_exclusive,
    rewrites=False,
    scans=True,
    why="The full-table scan that proves there is no NULL runs while reads and writes wait.",
    safe_alternative="ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c "
    "(in a later transaction); SET NOT NULL (PostgreSQL 12+ skips the scan); DROP CONSTRAINT c.",
    default_level=Risk.medium,
    check=check,
)
