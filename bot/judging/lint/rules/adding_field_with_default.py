"""A column whose value must be computed per row rewrites the whole table.

Since PostgreSQL 11 a non-volatile default is evaluated once and kept in the catalog, so existing
rows are not touched. A volatile default (random(), clock_timestamp(), gen_random_uuid(), the
nextval() behind serial), an identity or a stored generated column still gives every row its own
value: the table is rewritten under ACCESS EXCLUSIVE. Before 11, any non-NULL default rewrites.
"""

from collections.abc import Iterator

from pglast import ast

from bot.judging.lint import sqlast
from bot.judging.lint.model import Context, Hit, LockMode, Rule, Statement
from bot.judging.lint.sqlast import CT
from bot.judging.verdict import Risk

VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "clock_timestamp",
        "timeofday",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "nextval",
        "txid_current",
        "pg_current_xact_id",
    }
)
# Immutable or stable: evaluated once for the ALTER, so no rewrite since PostgreSQL 11.
NON_VOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "statement_timestamp",
        "transaction_timestamp",
        "current_setting",
        "coalesce",
        "concat",
        "lower",
        "upper",
        "to_jsonb",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "to_timestamp",
        "to_date",
        "date_trunc",
        "make_interval",
        "make_date",
        "md5",
    }
)


def _functions(expr: ast.Node) -> list[str]:
    return [
        sqlast.dotted(n.funcname).removeprefix("pg_catalog.")
        for n in sqlast.walk(expr)
        if isinstance(n, ast.FuncCall)
    ]


def _is_null(expr: ast.Node) -> bool:
    return isinstance(expr, ast.A_Const) and bool(expr.isnull)


def check(stmt: Statement, ctx: Context) -> Iterator[Hit]:
    for table, column in sqlast.added_columns(stmt.node):
        name, type_ = column.colname, sqlast.pg_type(column.typeName)
        if type_.name in sqlast.SERIAL_TYPES:
            yield Hit(
                f"ADD COLUMN {name} {type_}: every existing row gets nextval() (volatile), "
                f"so {table} is rewritten under ACCESS EXCLUSIVE",
                table,
            )
            continue
        if sqlast.column_constraints(column, CT.CONSTR_IDENTITY):
            yield Hit(
                f"ADD COLUMN {name} GENERATED AS IDENTITY numbers every existing row, "
                f"so {table} is rewritten under ACCESS EXCLUSIVE",
                table,
            )
            continue
        for generated in sqlast.column_constraints(column, CT.CONSTR_GENERATED):
            if generated.generated_kind == "s":
                yield Hit(
                    f"ADD COLUMN {name} GENERATED ... STORED computes the value for every row, "
                    f"so {table} is rewritten under ACCESS EXCLUSIVE",
                    table,
                )
        for default in sqlast.column_constraints(column, CT.CONSTR_DEFAULT):
            if _is_null(default.raw_expr):
                continue
            if ctx.options.pg_version < 11:
                yield Hit(
                    f"ADD COLUMN {name} with a DEFAULT rewrites {table} under ACCESS EXCLUSIVE "
                    f"before PostgreSQL 11 (server: {ctx.options.pg_version})",
                    table,
                )
                continue
            functions = _functions(default.raw_expr)
            volatile = [f for f in functions if f in VOLATILE_FUNCTIONS]
            unknown = [f for f in functions if f not in VOLATILE_FUNCTIONS | NON_VOLATILE_FUNCTIONS]
            if volatile:
                yield Hit(
                    f"ADD COLUMN {name} DEFAULT {volatile[0]}(): a volatile default is evaluated "
                    f"per row, so {table} is rewritten under ACCESS EXCLUSIVE",
                    table,
                )
            elif unknown:
                yield Hit(
                    f"ADD COLUMN {name} DEFAULT {unknown[0]}(): if that function is volatile, "
                    f"{table} is rewritten under ACCESS EXCLUSIVE",
                    table,
                    level=Risk.low,
                )


RULE = Rule(
    id="adding-field-with-default",
    title="Adding a column with a volatile default rewrites the table",
    lock=LockMode.access_exclusive,
    rewrites=True,
    scans=True,
    why="Every row is rewritten while reads and writes wait (any default before PostgreSQL 11; "
    "volatile defaults, identity, serial and stored generated columns on every version).",
    safe_alternative="Add the column without a default (or with a constant one), backfill it in "
    "batches, then SET DEFAULT for new rows.",
    default_level=Risk.medium,
    check=check,
)
