"""Catalog snapshots of the sandbox database and a diff a maintainer can read.

The snapshot is taken from the catalogs, not from the migration files, because the API under
test may run its own migrations at start-up: only the database knows what really changed.

Names are keyed as PostgreSQL prints qualified identities (`format('%I.%I')`, e.g.
`public.sessions`), the same spelling `bot.observing.ddl` records, so the two can be joined.
Objects that belong to an extension are left out: the extension and its version stand for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal, TypeVar

import psycopg
from psycopg import sql
from pydantic import BaseModel

from bot.observing.ddl import SCHEMA as GATEKEEPER_SCHEMA


def _user_objects(namespace: str, classid: str, oid: str) -> str:
    """SQL condition: the object lives in a user schema and is not part of an extension."""
    return f"""
        {namespace}.nspname NOT IN ('pg_catalog', 'information_schema', '{GATEKEEPER_SCHEMA}')
        AND {namespace}.nspname NOT LIKE 'pg\\_toast%'
        AND {namespace}.nspname NOT LIKE 'pg\\_temp%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{classid}'::regclass
                        AND e.objid = {oid} AND e.deptype = 'e')"""


_TABLES = f"""
SELECT format('%I.%I', n.nspname, c.relname), c.oid, n.nspname, c.relname, c.reltuples,
       pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {_user_objects("n", "pg_class", "c.oid")}
"""

_COLUMNS = f"""
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
  AND {_user_objects("n", "pg_class", "c.oid")}
ORDER BY a.attrelid, a.attnum
"""

_INDEXES = f"""
SELECT format('%I.%I', n.nspname, ic.relname), ic.relname, format('%I.%I', n.nspname, c.relname),
       am.amname, i.indisunique, i.indisprimary, pg_get_indexdef(i.indexrelid), i.indisvalid
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = ic.relam
WHERE c.relkind IN ('r', 'p') AND {_user_objects("n", "pg_class", "c.oid")}
"""

# PostgreSQL 18 also stores NOT NULL as constraints (contype 'n'); columns already say that.
_CONSTRAINTS = f"""
SELECT format('%I.%I.%I', n.nspname, c.relname, con.conname), con.conname,
       format('%I.%I', n.nspname, c.relname), con.contype, pg_get_constraintdef(con.oid),
       con.convalidated
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype IN ('p', 'u', 'f', 'c', 'x') AND {_user_objects("n", "pg_class", "c.oid")}
"""

_ENUMS = f"""
SELECT format('%I.%I', n.nspname, t.typname), n.nspname, t.typname,
       coalesce(array_agg(e.enumlabel ORDER BY e.enumsortorder)
                FILTER (WHERE e.enumlabel IS NOT NULL), '{{}}')
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typtype = 'e' AND {_user_objects("n", "pg_type", "t.oid")}
GROUP BY n.nspname, t.typname
"""

_EXTENSIONS = "SELECT extname, extversion FROM pg_extension"

# Serial and identity sequences depend on their column ('a' auto, 'i' internal).
_SEQUENCES = f"""
SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, format_type(s.seqtypid, NULL),
       CASE WHEN oa.attname IS NOT NULL
            THEN format('%I.%I.%I', on_.nspname, oc.relname, oa.attname) END
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class oc ON oc.oid = d.refobjid
LEFT JOIN pg_namespace on_ ON on_.oid = oc.relnamespace
LEFT JOIN pg_attribute oa ON oa.attrelid = d.refobjid AND oa.attnum = d.refobjsubid
WHERE {_user_objects("n", "pg_class", "c.oid")}
"""

_TABLE_FILES = f"""
SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, c.relfilenode,
       pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {_user_objects("n", "pg_class", "c.oid")}
ORDER BY 1
"""

ConstraintType = Literal["primary key", "unique", "foreign key", "check", "exclusion"]
_CONSTRAINT_TYPES: dict[str, ConstraintType] = {
    "p": "primary key",
    "u": "unique",
    "f": "foreign key",
    "c": "check",
    "x": "exclusion",
}
_IDENTITY = {"a": "always", "d": "by default"}
_GENERATED = {"s": "stored", "v": "virtual"}
_V = TypeVar("_V")


class Column(BaseModel):
    name: str
    type: str  # format_type(): 'text[]', 'character varying(64)'
    nullable: bool
    default: str | None  # for a generated column: its expression
    identity: Literal["always", "by default"] | None = None
    generated: Literal["stored", "virtual"] | None = None

    def describe(self) -> str:
        text = f"{self.type} {'NULL' if self.nullable else 'NOT NULL'}"
        if self.identity:
            text += f" GENERATED {self.identity.upper()} AS IDENTITY"
        if self.generated:
            text += f" GENERATED ALWAYS AS {self.default} {self.generated.upper()}"
        elif self.default is not None:
            text += f" DEFAULT {self.default}"
        return text


class Table(BaseModel):
    schema_name: str
    name: str
    columns: list[Column]
    rows_estimate: int | None  # pg_class.reltuples; None until the table is analysed
    size_bytes: int


class Index(BaseModel):
    name: str
    table: str  # qualified
    method: str  # btree, gin, ...
    unique: bool
    primary: bool
    definition: str  # pg_get_indexdef()
    valid: bool


class Constraint(BaseModel):
    name: str
    table: str  # qualified
    type: ConstraintType
    definition: str  # pg_get_constraintdef(), ends in ' NOT VALID' while not validated
    validated: bool


class Enum(BaseModel):
    schema_name: str
    name: str
    labels: list[str]


class Extension(BaseModel):
    name: str
    version: str


class Sequence(BaseModel):
    schema_name: str
    name: str
    type: str
    owned_by: str | None  # qualified column of a serial or identity column


class Snapshot(BaseModel):
    """The user-visible schema; every map is keyed by the object's qualified name."""

    tables: dict[str, Table]
    indexes: dict[str, Index]
    constraints: dict[str, Constraint]  # keyed schema.table.constraint
    enums: dict[str, Enum]
    extensions: dict[str, Extension]  # keyed by extension name
    sequences: dict[str, Sequence]


class TableStat(BaseModel):
    """Per-table facts that change without any DDL: a new relfilenode means a rewrite."""

    relfilenode: int  # changes on rewrite (ALTER TYPE, VACUUM FULL, CLUSTER, TRUNCATE)
    rows: int
    size_bytes: int


def snapshot(conn: psycopg.Connection) -> Snapshot:
    """The schema of every user schema, in a fixed handful of catalog queries.

    Runs in its own transaction (a savepoint if the caller has one open), so that on a
    connection outside autocommit no catalog locks outlive the call.
    """
    with conn.transaction():
        return _snapshot(conn)


def _snapshot(conn: psycopg.Connection) -> Snapshot:
    columns: dict[int, list[Column]] = {}
    for relid, name, type_, nullable, default, identity, generated in conn.execute(_COLUMNS):
        columns.setdefault(relid, []).append(
            Column(
                name=name,
                type=type_,
                nullable=nullable,
                default=default,
                identity=_IDENTITY.get(identity),
                generated=_GENERATED.get(generated),
            )
        )
    return Snapshot(
        tables=_by_key(
            (
                key,
                Table(
                    schema_name=schema,
                    name=name,
                    columns=columns.get(oid, []),
                    rows_estimate=int(reltuples) if reltuples >= 0 else None,
                    size_bytes=size,
                ),
            )
            for key, oid, schema, name, reltuples, size in conn.execute(_TABLES)
        ),
        indexes=_by_key(
            (key, Index(name=n, table=t, method=m, unique=u, primary=p, definition=d, valid=v))
            for key, n, t, m, u, p, d, v in conn.execute(_INDEXES)
        ),
        constraints=_by_key(
            (key, Constraint(name=n, table=t, type=_CONSTRAINT_TYPES[c], definition=d, validated=v))
            for key, n, t, c, d, v in conn.execute(_CONSTRAINTS)
        ),
        enums=_by_key(
            (key, Enum(schema_name=s, name=n, labels=labels))
            for key, s, n, labels in conn.execute(_ENUMS)
        ),
        extensions=_by_key(
            (name, Extension(name=name, version=version))
            for name, version in conn.execute(_EXTENSIONS)
        ),
        sequences=_by_key(
            (key, Sequence(schema_name=s, name=n, type=t, owned_by=o))
            for key, s, n, t, o in conn.execute(_SEQUENCES)
        ),
    )


def _by_key(items: Iterator[tuple[str, _V]]) -> dict[str, _V]:
    return dict(sorted(items, key=lambda item: item[0]))


def table_stats(conn: psycopg.Connection) -> dict[str, TableStat]:
    """Exact row counts and file identities, one count(*) per table (sandboxes are small).

    In one transaction, so the tables' share locks are gone when it returns: a lingering one
    would block the application's next ALTER TABLE.
    """
    stats: dict[str, TableStat] = {}
    with conn.transaction():
        for key, schema, name, relfilenode, size in conn.execute(_TABLE_FILES).fetchall():
            count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
            row = conn.execute(count).fetchone()
            assert row is not None
            stats[key] = TableStat(relfilenode=relfilenode, rows=row[0], size_bytes=size)
    return stats


Op = Literal["added", "removed", "changed"]
Kind = Literal[
    "table", "column", "index", "constraint", "enum", "enum value", "extension", "sequence"
]
_SIGNS: dict[Op, str] = {"added": "+", "removed": "-", "changed": "~"}
Value = str | bool | None


class Change(BaseModel):
    """One difference between two snapshots."""

    op: Op
    kind: Kind
    name: str  # qualified: 'public.sessions', 'public.sessions.tags', 'public.mood.happy'
    detail: str  # the readable rest of the line
    # For 'changed': attribute -> (before, after), e.g. {'type': ('text', 'varchar(20)')}.
    fields: dict[str, tuple[Value, Value]] = {}
    # Loses data or breaks existing readers/writers (see diff()).
    destructive: bool = False

    def line(self) -> str:
        return f"{_SIGNS[self.op]} {self.kind} {self.detail}"


class SchemaDiff(BaseModel):
    changes: list[Change]

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        return [change.line() for change in self.changes]

    def destructive(self) -> list[str]:
        return [change.line() for change in self.changes if change.destructive]


def diff(before: Snapshot, after: Snapshot) -> SchemaDiff:
    """What changed from `before` to `after`, tables first, each group sorted by name.

    Destructive: removed tables, columns, enums, enum values, extensions and free-standing
    sequences, and removed constraints or unique indexes that no new one of the same kind
    on the same table replaces. A rename shows as removed plus added, and so is destructive
    too: readers of the old name break. Type changes are listed but not judged here.
    """
    before = _without_parts_of_dropped_tables(before, after)
    return SchemaDiff(
        changes=[
            *_tables(before.tables, after.tables),
            *_all_columns(before.tables, after.tables),
            *_indexes(before, after),
            *_constraints(before.constraints, after.constraints),
            *_enums(before.enums, after.enums),
            *_extensions(before.extensions, after.extensions),
            *_sequences(before.sequences, after.sequences),
        ]
    )


def _without_parts_of_dropped_tables(before: Snapshot, after: Snapshot) -> Snapshot:
    """`before` less the indexes, constraints and sequences of tables that are gone.

    The table's own line says they went; listing each again only buries it.
    """
    gone = before.tables.keys() - after.tables.keys()

    def owned_by_gone(sequence: Sequence) -> bool:
        return any((sequence.owned_by or "").startswith(f"{table}.") for table in gone)

    return before.model_copy(
        update={
            "indexes": {k: i for k, i in before.indexes.items() if i.table not in gone},
            "constraints": {k: c for k, c in before.constraints.items() if c.table not in gone},
            "sequences": {k: s for k, s in before.sequences.items() if not owned_by_gone(s)},
        }
    )


def _pairs(
    before: Mapping[str, _V], after: Mapping[str, _V]
) -> Iterator[tuple[str, _V | None, _V | None]]:
    for key in sorted(before.keys() | after.keys()):
        yield key, before.get(key), after.get(key)


def _changed_fields(
    before: BaseModel, after: BaseModel, names: list[str]
) -> dict[str, tuple[Value, Value]]:
    return {
        name: (getattr(before, name), getattr(after, name))
        for name in names
        if getattr(before, name) != getattr(after, name)
    }


def _tables(before: dict[str, Table], after: dict[str, Table]) -> Iterator[Change]:
    for key, old, new in _pairs(before, after):
        if old is None and new is not None:
            columns = ", ".join(f"{c.name} {c.describe()}" for c in new.columns)
            yield Change(op="added", kind="table", name=key, detail=f"{key} ({columns})")
        elif new is None and old is not None:
            rows = "" if old.rows_estimate is None else f" (~{old.rows_estimate} rows)"
            yield Change(op="removed", kind="table", name=key, detail=key + rows, destructive=True)


def _all_columns(before: dict[str, Table], after: dict[str, Table]) -> Iterator[Change]:
    for key, old, new in _pairs(before, after):
        if old is not None and new is not None:
            yield from _columns(key, old, new)


def _columns(table: str, before: Table, after: Table) -> Iterator[Change]:
    old_columns = {c.name: c for c in before.columns}
    new_columns = {c.name: c for c in after.columns}
    for name, old, new in _pairs(old_columns, new_columns):
        key = f"{table}.{name}"
        if old is None and new is not None:
            yield Change(op="added", kind="column", name=key, detail=f"{key} {new.describe()}")
        elif new is None and old is not None:
            yield Change(
                op="removed",
                kind="column",
                name=key,
                detail=f"{key} {old.type}",
                destructive=True,
            )
        elif old is not None and new is not None and old != new:
            fields = _changed_fields(
                old, new, ["type", "nullable", "default", "identity", "generated"]
            )
            yield Change(
                op="changed",
                kind="column",
                name=key,
                detail=f"{key}: {_describe_fields(fields)}",
                fields=fields,
            )


def _describe_fields(fields: dict[str, tuple[Value, Value]]) -> str:
    parts = []
    for name, (old, new) in fields.items():
        if name == "nullable":
            parts.append(f"{'NULL' if old else 'NOT NULL'} -> {'NULL' if new else 'NOT NULL'}")
        else:
            parts.append(f"{name} {_text(old)} -> {_text(new)}")
    return ", ".join(parts)


def _text(value: Value) -> str:
    return "none" if value is None else str(value)


def _index_detail(index: Index) -> str:
    method = index.definition.split(" USING ", 1)[-1]
    flags = [word for word, on in [("UNIQUE", index.unique), ("INVALID", not index.valid)] if on]
    return " ".join([f"{index.name} ON {index.table} USING {method}", *flags])


def _indexes(before: Snapshot, after: Snapshot) -> Iterator[Change]:
    for key, old, new in _pairs(before.indexes, after.indexes):
        if old is None and new is not None:
            yield Change(op="added", kind="index", name=key, detail=_index_detail(new))
        elif new is None and old is not None:
            yield Change(
                op="removed",
                kind="index",
                name=key,
                detail=_index_detail(old),
                destructive=_unique_index_lost(old, before, after),
            )
        elif old is not None and new is not None and old != new:
            fields = _changed_fields(old, new, ["definition", "valid"])
            yield Change(
                op="changed",
                kind="index",
                name=key,
                detail=f"{old.name} ON {old.table}: {_describe_fields(fields)}",
                fields=fields,
            )


def _unique_index_lost(index: Index, before: Snapshot, after: Snapshot) -> bool:
    """A unique index gone with nothing unique added on its table: ON CONFLICT breaks.

    Indexes behind a constraint are judged with the constraint instead.
    """
    if not index.unique or any(
        c.table == index.table and c.name == index.name for c in before.constraints.values()
    ):
        return False
    return not any(
        i.unique and i.table == index.table and key not in before.indexes
        for key, i in after.indexes.items()
    )


def _constraint_detail(constraint: Constraint) -> str:
    return f"{constraint.name} ON {constraint.table} {constraint.definition}"


def _constraints(before: dict[str, Constraint], after: dict[str, Constraint]) -> Iterator[Change]:
    added = [new for key, new in after.items() if key not in before]
    for key, old, new in _pairs(before, after):
        if old is None and new is not None:
            yield Change(op="added", kind="constraint", name=key, detail=_constraint_detail(new))
        elif new is None and old is not None:
            replaced = any(c.table == old.table and c.type == old.type for c in added)
            yield Change(
                op="removed",
                kind="constraint",
                name=key,
                detail=_constraint_detail(old),
                destructive=not replaced,
            )
        elif old is not None and new is not None and old != new:
            fields = _changed_fields(old, new, ["validated"])
            if _unvalidated(old.definition) != _unvalidated(new.definition):
                fields["definition"] = (old.definition, new.definition)
            yield Change(
                op="changed",
                kind="constraint",
                name=key,
                detail=f"{old.name} ON {old.table}: {_describe_fields(fields)}",
                fields=fields,
            )


def _unvalidated(definition: str) -> str:
    return definition.removesuffix(" NOT VALID")


def _enums(before: dict[str, Enum], after: dict[str, Enum]) -> Iterator[Change]:
    for key, old, new in _pairs(before, after):
        if old is None and new is not None:
            labels = ", ".join(new.labels)
            yield Change(op="added", kind="enum", name=key, detail=f"{key} ({labels})")
        elif new is None and old is not None:
            yield Change(op="removed", kind="enum", name=key, detail=key, destructive=True)
        elif old is not None and new is not None:
            yield from _enum_values(key, old.labels, new.labels)


def _enum_values(key: str, before: list[str], after: list[str]) -> Iterator[Change]:
    for label in after:
        if label not in before:
            yield Change(
                op="added",
                kind="enum value",
                name=f"{key}.{label}",
                detail=f"{key} {label!r}",
            )
    for label in before:
        if label not in after:
            yield Change(
                op="removed",
                kind="enum value",
                name=f"{key}.{label}",
                detail=f"{key} {label!r}",
                destructive=True,
            )


def _extensions(before: dict[str, Extension], after: dict[str, Extension]) -> Iterator[Change]:
    for key, old, new in _pairs(before, after):
        if old is None and new is not None:
            yield Change(op="added", kind="extension", name=key, detail=f"{key} {new.version}")
        elif new is None and old is not None:
            yield Change(
                op="removed",
                kind="extension",
                name=key,
                detail=f"{key} {old.version}",
                destructive=True,
            )
        elif old is not None and new is not None and old != new:
            fields = _changed_fields(old, new, ["version"])
            yield Change(
                op="changed",
                kind="extension",
                name=key,
                detail=f"{key}: {_describe_fields(fields)}",
                fields=fields,
            )


def _sequences(before: dict[str, Sequence], after: dict[str, Sequence]) -> Iterator[Change]:
    """Sequences of serial/identity columns go with their column, so only the others count."""
    for key, old, new in _pairs(before, after):
        if old is None and new is not None:
            yield Change(op="added", kind="sequence", name=key, detail=_sequence_detail(key, new))
        elif new is None and old is not None:
            yield Change(
                op="removed",
                kind="sequence",
                name=key,
                detail=_sequence_detail(key, old),
                destructive=old.owned_by is None,
            )


def _sequence_detail(key: str, sequence: Sequence) -> str:
    owner = f" owned by {sequence.owned_by}" if sequence.owned_by else ""
    return f"{key} {sequence.type}{owner}"
