"""The populated replay: the change's migrations once more, on production-like rows.

The sandbox database is nearly empty, and an empty table forgives what a populated one does
not: `ADD COLUMN … NOT NULL` without a default, a unique index over duplicates, a narrowing
type change, a foreign key over orphans, a cast that fails on real values, a backfill whose
WHERE clause matches nothing. So the base database is cloned (`CREATE DATABASE … TEMPLATE`:
no second migration of the base), the tables the change touches (and the tables they
reference) are filled with rows generated from the catalog — types, NOT NULL, defaults,
keys, foreign keys in dependency order, enums; a quarter of each optional column NULL — on
the server (`generate_series`), and the
change migrates there too. What fails there fails on rows; the statistics collector says how
many rows each table's DML touched.

The generated rows are the gate's own SQL, run by its admin connection; the change's
migrations run on the clone exactly as on the first database: its role, its confinement.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from bot.observing.schema import Column, Snapshot
from bot.sandbox.base import url_for

_INTEGER = {"integer", "bigint", "numeric", "real", "double precision"}
_TIME = re.compile(r"^(timestamp|date|time)\b")
_TEXT = re.compile(r"^(text|character varying|varchar|character|char|citext)\b(?:\((\d+)\))?")
_FOREIGN_KEYS = """
SELECT format('%I.%I', cn.nspname, c.relname) AS child, a.attname AS column,
       format('%I.%I', pn.nspname, p.relname) AS parent_key, pn.nspname AS parent_schema,
       p.relname AS parent, pa.attname AS parent_column
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1]
WHERE k.contype = 'f' AND cardinality(k.conkey) = 1
"""
_OTHERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
_DML = """
SELECT format('%I.%I', schemaname, relname) AS t, n_tup_ins, n_tup_upd, n_tup_del, n_live_tup
FROM pg_stat_user_tables
"""


@dataclass
class Populated:
    """What the replay database holds before the change migrates there."""

    rows: dict[str, int] = field(default_factory=dict)  # table -> rows generated
    skipped: dict[str, str] = field(default_factory=dict)  # table -> why it has none
    seconds: float = 0.0


def clone(admin_url: str, source: str, target: str, owner: str) -> None:
    """CREATE DATABASE target TEMPLATE source OWNER owner, from the maintenance database
    (owned like the source, so the change's role may create in its public schema). The
    source must have no session: the caller closes its own first."""
    with psycopg.connect(url_for(admin_url, "postgres"), autocommit=True) as conn:
        conn.execute(SQL("DROP DATABASE IF EXISTS {}").format(Identifier(target)))
        conn.execute(
            SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                Identifier(target), Identifier(source), Identifier(owner)
            )
        )


def populate(
    url: str, base: Snapshot, tables: set[str], rows: int, after: Snapshot | None = None
) -> Populated:
    """Fill `tables` (qualified names) and the tables they reference with `rows` rows each,
    parents first. A table the generator cannot fill (a CHECK it cannot guess, a type it does
    not know on a NOT NULL column) is skipped with the reason: fewer rows, never a failure.

    Foreign keys the change adds (`after`'s) are honoured too: production's rows already
    satisfy the relation a healthy change declares, and generated orphans would fail it."""
    started = time.monotonic()
    result = Populated()
    with psycopg.connect(url, autocommit=True) as conn:
        keys = [*conn.execute(_FOREIGN_KEYS).fetchall(), *_declared_keys(after, base)]
        parents: dict[str, dict[str, tuple[str, str, str, str]]] = {}
        for child, column, parent_key, parent_schema, parent, parent_column in keys:
            parents.setdefault(child, {})[column] = (
                parent_key,
                parent_schema,
                parent,
                parent_column,
            )
        wanted = _with_ancestors(tables & set(base.tables), parents)
        # The gate's rows, not the application's: its triggers do not fire.
        conn.execute("SET session_replication_role = replica")
        enums = {name.split(".")[-1]: enum.labels for name, enum in base.enums.items()}
        for table in _parents_first(wanted, parents):
            statement = _insert(table, base.tables[table].columns, parents.get(table, {}), enums)
            if statement is None:
                result.skipped[table] = "a NOT NULL column of a type the generator does not know"
                continue
            try:
                conn.execute(statement, {"rows": rows})
            except psycopg.Error as exc:
                result.skipped[table] = exc.diag.message_primary or str(exc).strip()
                continue
            result.rows[table] = rows
        conn.execute("ANALYZE")
    result.seconds = time.monotonic() - started
    return result


def dml_counts(url: str, settle: float = 2.0) -> dict[str, tuple[int, int, int, int]]:
    """Rows inserted, updated and deleted so far, and live rows, per table. A session's
    counts reach the statistics when it ends, a little after it is gone from
    pg_stat_activity: read once no other session is left and two reads 50 ms apart agree
    (at most `settle` seconds)."""
    end = time.monotonic() + settle
    with psycopg.connect(url, autocommit=True) as conn:
        last: dict[str, tuple[int, int, int, int]] | None = None
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            others = conn.execute(_OTHERS).fetchone()
            counts = {t: (i, u, d, n) for t, i, u, d, n in conn.execute(_DML).fetchall()}
            if (others and others[0] == 0 and counts == last) or time.monotonic() > end:
                return counts
            last = counts
            time.sleep(0.05)


def drop(admin_url: str, database: str) -> None:
    with psycopg.connect(url_for(admin_url, "postgres"), autocommit=True) as conn:
        conn.execute(SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(database)))


_REFERENCE = re.compile(
    r'^FOREIGN KEY \((?P<column>\w+|"[^"]+")\) REFERENCES (?P<parent>[\w."]+)'
    r'\((?P<parent_column>\w+|"[^"]+")\)'
)


def _declared_keys(after: Snapshot | None, base: Snapshot) -> list[tuple[str, ...]]:
    """Single-column foreign keys of `after` between tables `base` has, as _FOREIGN_KEYS
    rows."""
    out: list[tuple[str, ...]] = []
    for constraint in after.constraints.values() if after else ():
        match = _REFERENCE.match(constraint.definition)
        if constraint.type != "foreign key" or match is None:
            continue
        parent = match["parent"] if "." in match["parent"] else f"public.{match['parent']}"
        if constraint.table not in base.tables or parent not in base.tables:
            continue
        parent_schema, parent_name = (_unquote(p) for p in _split(parent))
        out.append(
            (
                constraint.table,
                _unquote(match["column"]),
                parent,
                parent_schema,
                parent_name,
                _unquote(match["parent_column"]),
            )
        )
    return out


def _unquote(identifier: str) -> str:
    return identifier[1:-1].replace('""', '"') if identifier.startswith('"') else identifier


def _with_ancestors(tables: set[str], parents: dict[str, dict[str, tuple]]) -> set[str]:
    out, todo = set(), list(tables)
    while todo:
        table = todo.pop()
        if table in out:
            continue
        out.add(table)
        todo.extend(key for key, *_ in parents.get(table, {}).values())
    return out


def _parents_first(tables: set[str], parents: dict[str, dict[str, tuple]]) -> list[str]:
    ordered: list[str] = []

    def visit(table: str, path: tuple[str, ...]) -> None:
        if table in ordered or table in path or table not in tables:
            return
        for key, *_ in parents.get(table, {}).values():
            visit(key, (*path, table))
        ordered.append(table)

    for table in sorted(tables):
        visit(table, ())
    return ordered


def _insert(
    table: str,
    columns: list[Column],
    references: dict[str, tuple[str, str, str, str]],
    enums: dict[str, list[str]],
) -> SQL | None:
    """INSERT … SELECT … FROM generate_series(1, %(rows)s) g, or None when a required
    column has no value the generator can make."""
    schema, name = (_unquote(part) for part in _split(table))
    names, values, joins = [], [], []
    for column in columns:
        if column.generated or column.identity or column.default is not None:
            continue  # the table's own default (a serial, now(), gen_random_uuid())
        reference = references.get(column.name)
        if reference is not None:
            alias = f"k{len(joins)}"
            _key, parent_schema, parent, parent_column = reference
            joins.append(
                SQL(" CROSS JOIN (SELECT array_agg({}) AS ids FROM {}) {}").format(
                    Identifier(parent_column), Identifier(parent_schema, parent), Identifier(alias)
                )
            )
            ids = SQL("{}.ids").format(Identifier(alias))
            expression = SQL("{ids}[1 + mod(g, greatest(cardinality({ids}), 1))]").format(ids=ids)
        else:
            expression = _value(column, enums)
            if expression is None:
                if column.nullable:
                    continue
                return None
        if column.nullable:
            # Production's optional columns are often empty: a backfill `WHERE x IS NULL`
            # has rows to find, and one whose WHERE matches nothing stands out.
            expression = SQL("CASE WHEN mod(g, 4) <> 0 THEN {} END").format(expression)
        names.append(Identifier(column.name))
        values.append(SQL("({})::{}").format(expression, SQL(column.type)))
    if not names:
        return SQL("INSERT INTO {} SELECT FROM generate_series(1, %(rows)s) g").format(
            Identifier(schema, name)
        )
    return SQL("INSERT INTO {} ({}) SELECT {} FROM generate_series(1, %(rows)s) g{}").format(
        Identifier(schema, name), SQL(", ").join(names), SQL(", ").join(values), SQL("").join(joins)
    )


def _split(table: str) -> tuple[str, str]:
    """`public."Odd.Name"` as its two identifiers, quoted as the catalog prints them."""
    if table.endswith('"'):
        start = table.rfind('."')
        return table[:start], table[start + 1 :]
    schema, _, name = table.rpartition(".")
    return schema, name


def _value(column: Column, enums: dict[str, list[str]]) -> SQL | None:
    """A value of the column's type from the row number `g`: distinct per row, so unique
    and primary keys hold; None for a type the generator does not know."""
    kind = column.type
    if kind.endswith("[]"):
        return SQL("'{}'")
    if kind in _INTEGER:
        return SQL("g + 1000000")
    if kind == "smallint":
        return SQL("mod(g, 32000)")
    if kind.startswith("numeric"):
        return SQL("mod(g, 1000)")
    text = _TEXT.match(kind)
    if text:
        width = int(text.group(2)) if text.group(2) else 0
        value = SQL("'r' || g || '@example.com'")
        return SQL("left({}, {})").format(value, Literal(width)) if width else value
    if kind == "boolean":
        return SQL("mod(g, 2) = 0")
    if kind == "uuid":
        return SQL("md5(g::text)::uuid")
    if _TIME.match(kind):
        return SQL("now() - g * interval '1 minute'")
    if kind in ("json", "jsonb"):
        return SQL("'{}'")
    if kind == "bytea":
        return SQL("'\\x00'::bytea")
    labels = enums.get(kind.strip('"').split(".")[-1])
    if labels:
        return SQL("(enum_range(NULL::{}))[1 + mod(g, {})]").format(SQL(kind), Literal(len(labels)))
    return None
