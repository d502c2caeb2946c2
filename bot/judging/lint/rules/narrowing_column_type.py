"""Narrowing a column's type fails (or loses data) on rows that no longer fit.

varchar(20) -> varchar(10), bigint -> integer, numeric(12,2) -> numeric(8,2): the migration
passes on test data and fails in production with "value too long" or "out of range" after having
held ACCESS EXCLUSIVE for part of the rewrite. With USING ...::varchar(n) values are silently cut.
The current type is the one this migration declared, else the one the database had before it
(the base's catalog, which the pipeline passes in): a versioned migration altering an old table.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement, find_table
from bot.judging.lint.sqlast import AT, PgType
from bot.judging.verdict import Risk

_WIDTHS = {"int2": 2, "int4": 4, "int8": 8, "float4": 4, "float8": 8}
_LENGTH_LIMITED = frozenset({"varchar", "bpchar", "varbit", "bit"})
_UNLIMITED_STRINGS = frozenset({"text", "varchar"})


def narrowing(old: PgType, new: PgType) -> str | None:
    """Why `new` cannot hold every value of `old`, or None."""
    if new.name in _LENGTH_LIMITED and new.mods:
        limit = new.mods[0]
        if (old.name in _UNLIMITED_STRINGS and not old.mods) or (
            old.name in _LENGTH_LIMITED and old.mods and old.mods[0] > limit
        ):
            return f"values longer than {limit} characters make it fail"
    if old.name in _WIDTHS and new.name in _WIDTHS and _WIDTHS[new.name] < _WIDTHS[old.name]:
        if old.name.startswith("float"):
            return "values lose precision"
        return "values out of the smaller range make it fail"
    if old.name == new.name == "numeric" and old.mods and new.mods:
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        if new.mods[0] - new_scale < old.mods[0] - old_scale:
            return "values with more integer digits make it fail"
        if new_scale < old_scale:
            return "values are rounded to fewer decimals"
    if old.name in ("timestamp", "timestamptz") and new.name == "date":
        return "the time of day is dropped"
    return None


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, cmd in sqlast.alter_table_cmds(stmt.node, AT.AT_AlterColumnType):
        old = sqlast.column_types(ctx.history, table).get(cmd.name) or _before(ctx, table, cmd.name)
        new = sqlast.pg_type(cmd.def_.typeName)
        reason = narrowing(old, new) if old is not None else None
        if reason:
            yield Hit(
                f"ALTER COLUMN {cmd.name} {old} -> {new} narrows the type of {table}: {reason}",
                table,
            )


def _before(ctx: Context, table: str, column: str) -> PgType | None:
    """The column's type in the database the migration meets (the base's catalog)."""
    entry = find_table(table, ctx.options.column_types)
    text = ctx.options.column_types[entry].get(column) if entry is not None else None
    return sqlast.parse_type(text) if text else None


RULE = Rule(
    id="narrowing-column-type",
    title="Narrowing a column's type",
    lock=LockMode.access_exclusive,
    rewrites=True,
    scans=True,
    why="Rows that do not fit make the migration fail in production (or are silently cut with an "
    "explicit cast).",
    safe_alternative="Enforce the limit with a CHECK constraint added NOT VALID and validated "
    "later, after cleaning the data; keep the wider type.",
    default_level=Risk.high,
    check=check,
)
