"""Changing a column's type usually rewrites the table and every index on it.

ALTER COLUMN ... TYPE holds ACCESS EXCLUSIVE while each row is converted and the indexes are
rebuilt. A few changes are binary-compatible and only touch the catalog: varchar(n) to a larger
varchar or to text, text to unbounded varchar, numeric(p,s) to a larger precision with the same
scale. When the current type is not declared in this migration the linter cannot tell, and says
so at a lower level.
"""

from collections.abc import Iterator

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import AT, PgType
from bot.judging.verdict import Risk

_STRINGS = frozenset({"varchar", "text"})


def metadata_only(old: PgType, new: PgType) -> bool:
    """PostgreSQL keeps the data as it is (binary-coercible, no narrower limit)."""
    if old == new:
        return True
    if old.array != new.array:
        return False
    if old.name in _STRINGS and new.name in _STRINGS:
        if new.name == "text" or not new.mods:
            return True
        return old.name == "varchar" and bool(old.mods) and new.mods[0] >= old.mods[0]
    if old.name == new.name == "numeric":
        if not new.mods:
            return True
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        return bool(old.mods) and new.mods[0] >= old.mods[0] and new_scale == old_scale
    return old.name == "cidr" and new.name == "inet"


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, cmd in sqlast.alter_table_cmds(stmt.node, AT.AT_AlterColumnType):
        new = sqlast.pg_type(cmd.def_.typeName)
        old = sqlast.column_types(ctx.history, table).get(cmd.name)
        using = cmd.def_.raw_default is not None
        if old is not None and not using and metadata_only(old, new):
            continue
        if old is None and not using and new.name in _STRINGS | {"numeric"}:
            yield Hit(
                f"ALTER COLUMN {cmd.name} TYPE {new}: only a catalog change if the current type "
                f"is a narrower {new.name}, otherwise {table} is rewritten under ACCESS EXCLUSIVE",
                table,
                level=Risk.low,
            )
            continue
        change = f"{old} -> {new}" if old is not None else f"TYPE {new}"
        yield Hit(
            f"ALTER COLUMN {cmd.name} {change} rewrites {table} and rebuilds its indexes under "
            "ACCESS EXCLUSIVE",
            table,
        )


RULE = Rule(
    id="changing-column-type",
    title="Changing a column's type",
    lock=LockMode.access_exclusive,
    rewrites=True,
    scans=True,
    why="The table and its indexes are rewritten while reads and writes wait; running code may "
    "also not expect the new type.",
    safe_alternative="Add a new column of the new type, dual-write and backfill in batches, "
    "switch reads, then drop the old column. Widening varchar(n) or moving to text is safe.",
    default_level=Risk.medium,
    check=check,
)
