"""bot.observing.schema against a real PostgreSQL: snapshots, table stats and the readable diff."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from bot.observing import ddl, schema


@pytest.fixture
def pg_conn(fresh_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        yield conn


BASE = """
CREATE EXTENSION pg_trgm;
CREATE TYPE session_state AS ENUM ('open', 'closed');
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email character varying(64) NOT NULL UNIQUE
);
CREATE TABLE sessions (
    id serial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    state text NOT NULL DEFAULT 'open' CHECK (state <> ''),
    phase session_state,
    cluster_id text,
    tags text[]
);
CREATE INDEX idx_sessions_tags ON sessions USING gin (tags);
INSERT INTO users (email) VALUES ('a@example.org'), ('b@example.org');
INSERT INTO sessions (user_id, cluster_id) VALUES (1, 'c1'), (1, 'c2'), (2, NULL);
"""


@pytest.fixture
def conn(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute(BASE)
    return pg_conn


def test_snapshot_of_a_small_schema(conn: psycopg.Connection) -> None:
    snap = schema.snapshot(conn)

    assert list(snap.tables) == ["public.sessions", "public.users"]
    sessions = snap.tables["public.sessions"]
    assert (sessions.schema_name, sessions.name) == ("public", "sessions")
    columns = {c.name: c for c in sessions.columns}
    assert list(columns) == ["id", "user_id", "state", "phase", "cluster_id", "tags"]
    assert columns["tags"] == schema.Column(name="tags", type="text[]", nullable=True, default=None)
    assert columns["state"].default == "'open'::text" and not columns["state"].nullable
    assert columns["phase"].type == "session_state"
    assert columns["id"].default == "nextval('sessions_id_seq'::regclass)"
    users = {c.name: c for c in snap.tables["public.users"].columns}
    assert users["id"].identity == "always"
    assert users["email"].type == "character varying(64)"
    assert sessions.size_bytes > 0

    tags = snap.indexes["public.idx_sessions_tags"]
    assert (tags.table, tags.method, tags.unique, tags.valid) == (
        "public.sessions",
        "gin",
        False,
        True,
    )
    assert tags.definition == "CREATE INDEX idx_sessions_tags ON public.sessions USING gin (tags)"
    assert snap.indexes["public.sessions_pkey"].primary

    types = {key: c.type for key, c in snap.constraints.items()}
    assert types == {
        "public.sessions.sessions_pkey": "primary key",
        "public.sessions.sessions_user_id_fkey": "foreign key",
        "public.sessions.sessions_state_check": "check",
        "public.users.users_pkey": "primary key",
        "public.users.users_email_key": "unique",
    }
    fk = snap.constraints["public.sessions.sessions_user_id_fkey"]
    assert fk.definition == "FOREIGN KEY (user_id) REFERENCES users(id)" and fk.validated

    assert snap.enums["public.session_state"].labels == ["open", "closed"]
    assert snap.extensions["pg_trgm"].version
    assert snap.sequences["public.sessions_id_seq"].owned_by == "public.sessions.id"
    assert snap.sequences["public.users_id_seq"].owned_by == "public.users.id"


def test_snapshot_round_trips_through_json(conn: psycopg.Connection) -> None:
    snap = schema.snapshot(conn)
    assert schema.Snapshot.model_validate_json(snap.model_dump_json()) == snap


def test_gatekeeper_schema_is_excluded(conn: psycopg.Connection) -> None:
    before = schema.snapshot(conn)
    ddl.install(conn)
    after = schema.snapshot(conn)
    assert schema.diff(before, after).is_empty
    assert not any("_gatekeeper" in key for key in [*after.tables, *after.sequences])


def test_other_schemas_and_quoted_names_are_included(conn: psycopg.Connection) -> None:
    conn.execute('CREATE SCHEMA billing; CREATE TABLE billing."Invoice Lines" (id int)')
    assert 'billing."Invoice Lines"' in schema.snapshot(conn).tables


def test_unchanged_schema_diffs_empty(conn: psycopg.Connection) -> None:
    before = schema.snapshot(conn)
    conn.execute("INSERT INTO users (email) VALUES ('c@example.org')")
    diff = schema.diff(before, schema.snapshot(conn))
    assert diff.is_empty and diff.lines() == [] and diff.destructive() == []


MIGRATION = """
ALTER TABLE sessions ADD COLUMN labels text[];
ALTER TABLE sessions DROP COLUMN cluster_id;
ALTER TABLE sessions ALTER COLUMN state TYPE varchar(20);
CREATE INDEX idx_sessions_labels ON sessions USING gin (labels);
ALTER TYPE session_state ADD VALUE 'paused';
"""


def test_diff_after_a_migration(conn: psycopg.Connection) -> None:
    before = schema.snapshot(conn)
    conn.execute(MIGRATION)
    diff = schema.diff(before, schema.snapshot(conn))

    assert diff.lines() == [
        "- column public.sessions.cluster_id text",
        "+ column public.sessions.labels text[] NULL",
        "~ column public.sessions.state: type text -> character varying(20)",
        "+ index idx_sessions_labels ON public.sessions USING gin (labels)",
        # PostgreSQL re-deparses the CHECK with the new type.
        "~ constraint sessions_state_check ON public.sessions:"
        " definition CHECK ((state <> ''::text)) -> CHECK (((state)::text <> ''::text))",
        "+ enum value public.session_state 'paused'",
    ]
    assert diff.destructive() == ["- column public.sessions.cluster_id text"]
    [state] = [c for c in diff.changes if c.name == "public.sessions.state"]
    assert state.fields["type"] == ("text", "character varying(20)")
    assert schema.SchemaDiff.model_validate_json(diff.model_dump_json()) == diff


def test_added_and_removed_objects(conn: psycopg.Connection) -> None:
    before = schema.snapshot(conn)
    conn.execute("""
        DROP EXTENSION pg_trgm;
        CREATE TABLE audit (at timestamptz NOT NULL DEFAULT now());
        CREATE TYPE colour AS ENUM ('red');
        ALTER TABLE sessions ALTER COLUMN user_id DROP NOT NULL;
    """)
    version = before.extensions["pg_trgm"].version
    assert schema.diff(before, schema.snapshot(conn)).lines() == [
        "+ table public.audit (at timestamp with time zone NOT NULL DEFAULT now())",
        "~ column public.sessions.user_id: NOT NULL -> NULL",
        "+ enum public.colour (red)",
        f"- extension pg_trgm {version}",
    ]


def test_destructive_lists_drops(conn: psycopg.Connection) -> None:
    before = schema.snapshot(conn)
    conn.execute("""
        ALTER TABLE sessions DROP CONSTRAINT sessions_state_check;
        ALTER TYPE session_state RENAME VALUE 'closed' TO 'done';
        DROP TABLE users CASCADE;
    """)
    diff = schema.diff(before, schema.snapshot(conn))
    # The table's own indexes, constraints and identity sequence go with its line; the
    # foreign key that CASCADE took from the surviving table is listed.
    assert diff.destructive() == [
        "- table public.users",
        "- constraint sessions_state_check ON public.sessions CHECK ((state <> ''::text))",
        "- constraint sessions_user_id_fkey ON public.sessions"
        " FOREIGN KEY (user_id) REFERENCES users(id)",
        "- enum value public.session_state 'closed'",
    ]
    assert "+ enum value public.session_state 'done'" in diff.lines()
    values = {c.name for c in diff.changes if c.kind == "enum value"}
    assert values == {"public.session_state.closed", "public.session_state.done"}


def test_replaced_foreign_key_is_not_destructive(conn: psycopg.Connection) -> None:
    before = schema.snapshot(conn)
    conn.execute("""
        ALTER TABLE sessions DROP CONSTRAINT sessions_user_id_fkey;
        ALTER TABLE sessions ADD CONSTRAINT sessions_user_fk
            FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE NOT VALID;
    """)
    diff = schema.diff(before, schema.snapshot(conn))
    assert len(diff.lines()) == 2 and diff.destructive() == []


def test_replaced_constraint_is_not_destructive(conn: psycopg.Connection) -> None:
    before = schema.snapshot(conn)
    conn.execute("""
        ALTER TABLE sessions DROP CONSTRAINT sessions_state_check;
        ALTER TABLE sessions ADD CONSTRAINT state_not_blank CHECK (btrim(state) <> '') NOT VALID;
    """)
    middle = schema.snapshot(conn)
    diff = schema.diff(before, middle)
    assert diff.destructive() == []
    assert (
        "+ constraint state_not_blank ON public.sessions CHECK ((btrim(state) <> ''::text))"
        " NOT VALID"
    ) in diff.lines()

    conn.execute("ALTER TABLE sessions VALIDATE CONSTRAINT state_not_blank")
    assert schema.diff(middle, schema.snapshot(conn)).lines() == [
        "~ constraint state_not_blank ON public.sessions: validated False -> True"
    ]


def test_dropped_unique_index_is_destructive(conn: psycopg.Connection) -> None:
    conn.execute("CREATE UNIQUE INDEX sessions_cluster ON sessions (cluster_id)")
    before = schema.snapshot(conn)
    conn.execute("DROP INDEX sessions_cluster")
    assert schema.diff(before, schema.snapshot(conn)).destructive() == [
        "- index sessions_cluster ON public.sessions USING btree (cluster_id) UNIQUE"
    ]


def test_table_stats_show_rows_and_rewrites(conn: psycopg.Connection) -> None:
    before = schema.table_stats(conn)
    assert before["public.sessions"].rows == 3 and before["public.users"].rows == 2

    conn.execute("ALTER TABLE sessions ADD COLUMN note text")
    added = schema.table_stats(conn)
    assert added["public.sessions"].relfilenode == before["public.sessions"].relfilenode

    conn.execute("ALTER TABLE sessions ALTER COLUMN id TYPE bigint")
    rewritten = schema.table_stats(conn)
    assert rewritten["public.sessions"].relfilenode != before["public.sessions"].relfilenode
    assert rewritten["public.users"].relfilenode == before["public.users"].relfilenode
    assert rewritten["public.sessions"].rows == 3


def test_no_locks_outlive_the_calls_outside_autocommit(conn: psycopg.Connection) -> None:
    with psycopg.connect(conn.info.dsn, password=conn.info.password) as plain:
        schema.snapshot(plain)
        schema.table_stats(plain)
        assert plain.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
