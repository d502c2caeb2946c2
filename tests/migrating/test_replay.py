"""The populated replay: what an empty sandbox table forgives, generated rows do not.

Each case is a directory-mode repository whose `items` table (and an `orders` table that
references it) is empty on main, validated by the CLI against real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from bot.migrating import replay
from bot.observing.schema import snapshot
from tests.engine.test_validate import branch, criterion, validate
from tests.helpers import ITEMS_POLICY, commit, git, items_repo

pytestmark = pytest.mark.timeout(300)

ORDERS = (
    "CREATE TABLE orders (id uuid PRIMARY KEY, item_id bigint NOT NULL REFERENCES items (id),"
    " placed timestamptz NOT NULL, state text NOT NULL CHECK (state <> ''));\n"
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = items_repo(
        tmp_path_factory.mktemp("replay"), ITEMS_POLICY, "id bigint PRIMARY KEY, name text"
    )
    branch(repo, "builder/orders-base", {"migrations/002_orders.sql": ORDERS})
    return repo


def test_a_required_column_without_default_fails_on_rows_only(repo):
    branch(
        repo,
        "builder/required",
        {
            "migrations/002_sku.sql": (
                "ALTER TABLE items ADD COLUMN IF NOT EXISTS sku text NOT NULL;\n"
            )
        },
    )
    proc, verdict = validate(repo, "builder/required")
    # The empty sandbox table takes it: only the replay has rows.
    assert criterion(verdict, "migrate.apply")["status"] == "passed"
    populated = criterion(verdict, "migrate.populated")
    assert populated["status"] == "failed"
    assert 'column "sku"' in populated["evidence"] and "null values" in populated["evidence"]
    assert "public.items (1000 rows)" in populated["evidence"]
    assert proc.returncode == 1


def test_a_backfill_that_updates_nothing_is_named(repo):
    branch(
        repo,
        "builder/backfill",
        {
            "migrations/002_seen.sql": (
                "ALTER TABLE items ADD COLUMN IF NOT EXISTS seen timestamptz DEFAULT now();\n"
                "UPDATE items SET seen = now() - interval '1 day' WHERE seen IS NULL;\n"
            )
        },
    )
    _proc, verdict = validate(repo, "builder/backfill")
    assert criterion(verdict, "migrate.populated")["status"] == "passed"
    found = [f for f in verdict["findings"] if f["rule"] == "dml-no-rows"]
    assert len(found) == 1 and "0 of 1000" in found[0]["message"]
    assert "WHERE seen IS NULL" in found[0]["statement"]


def test_a_backfill_that_updates_rows_passes_without_a_finding(repo):
    branch(
        repo,
        "builder/real-backfill",
        {
            "migrations/002_label.sql": (
                "ALTER TABLE items ADD COLUMN IF NOT EXISTS label text;\n"
                "UPDATE items SET label = name WHERE label IS NULL;\n"
            )
        },
    )
    proc, verdict = validate(repo, "builder/real-backfill")
    assert criterion(verdict, "migrate.populated")["status"] == "passed"
    assert not [f for f in verdict["findings"] if f["rule"] == "dml-no-rows"]
    assert proc.returncode == 0, verdict["summary"]


def test_rows_are_generated_parents_first_within_constraints(pg_sandbox, fresh_database):
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name varchar(8) NOT NULL UNIQUE"
            " CHECK (name ~ '^[A-Z]+$'))"
        )
        conn.execute(ORDERS)
        conn.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')")
        conn.execute('CREATE TABLE "user" (id serial PRIMARY KEY, m mood NOT NULL)')
        base = snapshot(conn)
    tables = {"public.orders", 'public."user"'}
    filled = replay.populate(fresh_database, base, tables, 50)
    # items is wanted because orders references it, but its CHECK refuses generated names:
    # it stays empty, with the reason, and orders (a NOT NULL reference to it) with it.
    assert set(filled.rows) == {'public."user"'}
    assert set(filled.skipped) == {"public.items", "public.orders"}
    assert "check constraint" in filled.skipped["public.items"]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        assert conn.execute('SELECT count(DISTINCT m) FROM "user"').fetchone() == (2,)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("ALTER TABLE items DROP CONSTRAINT items_name_check")
    again = replay.populate(fresh_database, base, {"public.orders"}, 5)
    assert again.rows == {"public.items": 5, "public.orders": 5}
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        orphans = "SELECT count(*) FROM orders o LEFT JOIN items i ON i.id = o.item_id"
        assert conn.execute(orphans + " WHERE i.id IS NULL").fetchone() == (0,)


def test_a_rewrite_of_a_declared_table_is_timed_at_two_sample_sizes(tmp_path):
    policy = ITEMS_POLICY.replace("{items: {rows: 1000}}", "{items: {rows: 2000000}}")
    policy += "locks: {max_blocking: 1h}\n"
    repo = items_repo(tmp_path, policy, "id integer PRIMARY KEY, name text")
    branch(
        repo,
        "builder/bigint",
        {"migrations/002_bigint.sql": "ALTER TABLE items ALTER COLUMN id TYPE bigint;\n"},
    )
    _proc, verdict = validate(repo, "builder/bigint")
    rewrite = next(f for f in verdict["risk_factors"] if f["id"] == "table-rewrite")
    # An hour's budget: whatever the machine measured, the prediction is within it.
    assert rewrite["level"] == "low" and "within the 3600 s budget" in rewrite["reason"]
    inconclusive = verdict["evidence"]["replay"].get("inconclusive_timing", {})
    if "public.items" in inconclusive:
        # A busy machine: ten times the rows did not take visibly longer. No claim from it.
        assert "ms at 1,000 rows" in inconclusive["public.items"]
        assert "predicted for 2,000,000 declared rows at ~500,000 rows/s" in rewrite["reason"]
        return
    assert "measured:" in rewrite["reason"] and "ms at 1,000 rows" in rewrite["reason"]
    assert "ms at 10,000 rows" in rewrite["reason"] and "2,000,000 declared" in rewrite["reason"]


def test_a_plain_index_build_on_a_declared_table_is_timed_and_never_rated_lower(tmp_path):
    """A plain CREATE INDEX reads the whole table while writes wait: timed like a rewrite. An
    hour's budget makes the measured factor low, and the linter's high for two million
    declared rows stands: a sort timed on 10,000 rows does not vouch for millions."""
    policy = ITEMS_POLICY.replace("{items: {rows: 1000}}", "{items: {rows: 2000000}}")
    policy += "locks: {max_blocking: 1h}\n"
    repo = items_repo(tmp_path, policy, "id integer PRIMARY KEY, name text")
    branch(
        repo,
        "builder/index",
        {
            "migrations/002_index.sql": "CREATE INDEX IF NOT EXISTS items_name ON items (name);\n"
            # A nullable column is a catalog change: it adds nothing to the time.
            "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"
        },
    )
    _proc, verdict = validate(repo, "builder/index")
    factors = {f["id"]: f for f in verdict["risk_factors"]}
    assert "table-rewrite" not in factors
    assert factors["lint:require-concurrent-index-creation"]["level"] == "high"
    assert verdict["risk"] == "high"
    inconclusive = verdict["evidence"]["replay"].get("inconclusive_timing", {})
    if "public.items" in inconclusive:  # a busy machine: no claim from noise
        assert "blocking-lock" not in factors
        return
    blocking = factors["blocking-lock"]
    assert blocking["level"] == "low" and blocking["location"] == "public.items"
    assert "held under SHARE (writes wait)" in blocking["reason"]
    assert "ms at 1,000 rows" in blocking["reason"] and "ms at 10,000 rows" in blocking["reason"]
    assert "2,000,000 declared, within the 3600 s budget" in blocking["reason"]


def test_migrations_that_ignore_the_given_database_leave_the_replay_unclaimed(tmp_path):
    """A command that always migrates the database named `app`, whatever DB_NAME says: the
    copy stays unmigrated, and the run says the replay proved nothing instead of passing it."""
    script = (
        "import os, psycopg\n"
        "url = 'host={DB_HOST} port={DB_PORT} user={DB_USER} password={DB_PASSWORD}'\n"
        "with psycopg.connect(url.format(**os.environ) + ' dbname=app', autocommit=True) as c:\n"
        "    c.execute(open('schema.sql').read())\n"
    )
    policy = ITEMS_POLICY.replace(
        "{mode: directory, directory: migrations}", "{mode: command, command: python migrate.py}"
    )
    repo = items_repo(tmp_path, policy)
    git(repo, "checkout", "-q", "main")
    commit(
        repo,
        {
            "migrate.py": script,
            "schema.sql": "CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY);\n",
        },
        "a migration command with its own idea of the database",
    )
    branch(
        repo,
        "builder/note",
        {
            "schema.sql": "CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY);\n"
            "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"
        },
    )
    _proc, verdict = validate(repo, "builder/note")
    populated = criterion(verdict, "migrate.populated")
    assert populated["status"] == "skipped" and not populated["required"]
    assert "left the copy unchanged" in populated["evidence"]


def test_a_backfill_on_a_quoted_table_is_counted_on_that_table(tmp_path):
    """`user` is always quoted: its statistics must be found under the catalog's name."""
    repo = items_repo(tmp_path, ITEMS_POLICY)
    commit(
        repo,
        {"migrations/002_user.sql": 'CREATE TABLE "user" (id bigint PRIMARY KEY, name text);\n'},
        "users",
    )
    branch(
        repo,
        "builder/names",
        {"migrations/003_names.sql": "UPDATE \"user\" SET name = 'x' WHERE name IS NULL;\n"},
    )
    _proc, verdict = validate(repo, "builder/names")
    assert verdict["evidence"]["replay"]["rows"] == {'public."user"': 1000}
    assert not [f for f in verdict["findings"] if f["rule"] == "dml-no-rows"]


# An API that migrates its own database at start-up (the sessions-api's way): every file of
# migrations/, in order, on every start, then /healthz.
STARTUP_API = """\
import os, pathlib, psycopg
from http.server import BaseHTTPRequestHandler, HTTPServer
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    for path in sorted(pathlib.Path("migrations").glob("*.sql")):
        conn.execute(path.read_text())
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"""


@pytest.fixture(scope="module")
def startup_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy = ITEMS_POLICY.replace("{mode: directory, directory: migrations}", "{mode: startup}")
    policy += "api: {command: python api.py, health_path: /healthz}\n"
    repo = items_repo(
        tmp_path_factory.mktemp("startup"), policy, "id bigint PRIMARY KEY, name text"
    )
    commit(
        repo,
        {
            "api.py": STARTUP_API,
            "migrations/001_items.sql": "CREATE TABLE IF NOT EXISTS items "
            "(id bigint PRIMARY KEY, name text);\n"
            # Start-up SQL the base already runs on every start: it updates nothing after the
            # first, and is not the change's.
            "UPDATE items SET name = 'first' WHERE id = 1 AND name IS NULL;\n",
        },
        "an API that migrates at start-up",
    )
    return repo


def test_startup_migrations_replay_on_rows_through_the_api(startup_repo):
    branch(
        startup_repo,
        "builder/startup-required",
        {
            "migrations/002_sku.sql": (
                "ALTER TABLE items ADD COLUMN IF NOT EXISTS sku text NOT NULL;\n"
            )
        },
    )
    proc, verdict = validate(startup_repo, "builder/startup-required")
    assert criterion(verdict, "migrate.apply")["status"] == "passed"
    populated = criterion(verdict, "migrate.populated")
    assert populated["status"] == "failed", populated
    assert "the API did not start on the copy" in populated["evidence"]
    assert 'column "sku"' in populated["evidence"] and "null values" in populated["evidence"]
    assert proc.returncode == 1


def test_startup_sql_the_base_runs_too_is_not_the_changes_backfill(startup_repo):
    branch(
        startup_repo,
        "builder/startup-note",
        {"migrations/002_note.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"},
    )
    _proc, verdict = validate(startup_repo, "builder/startup-note")
    assert criterion(verdict, "migrate.populated")["status"] == "passed"
    assert verdict["evidence"]["replay"]["rows"] == {"public.items": 1000}
    assert verdict["evidence"]["way_back_on"] == "the populated copy"
    assert not [f for f in verdict["findings"] if f["rule"] == "dml-no-rows"]
