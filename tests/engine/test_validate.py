"""`gatekeeper validate` end to end: real git, real PostgreSQL, real processes, real exit codes.

Most cases use a tiny repository whose migrations are SQL files (no API), so each run takes
about a second; the demo's API cases are covered in test_demo.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import ITEMS_POLICY as POLICY
from tests.helpers import commit, git, items_repo

GATEKEEPER = [sys.executable, "-m", "bot"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main: one table, a policy of its own and a check; builder branches add to it."""
    return items_repo(tmp_path, POLICY, "id bigint PRIMARY KEY, name text")


def branch(repo: Path, name: str, files: dict[str, str]) -> None:
    git(repo, "checkout", "-qb", name, "main")
    commit(repo, files, f"fix on {name}")
    git(repo, "checkout", "-q", "main")


def validate(repo: Path, head: str, *extra: str, env: dict | None = None):
    proc = subprocess.run(
        [
            *GATEKEEPER,
            "validate",
            "--repo",
            str(repo),
            "--base",
            "main",
            "--head",
            head,
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )
    verdict = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, verdict


def criterion(verdict: dict, cid: str) -> dict:
    return next(c for c in verdict["criteria"] if c["id"] == cid)


def test_idempotent_additive_migration_is_approved(repo, tmp_path):
    branch(
        repo,
        "builder/add-note",
        {
            "migrations/002_note.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n",
        },
    )
    out = tmp_path / "out"
    proc, verdict = validate(repo, "builder/add-note", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert verdict["decision"] == "approve" and verdict["risk"] == "low"
    assert criterion(verdict, "migrate.idempotent")["status"] == "passed"
    assert "+ column public.items.note text NULL" in verdict["evidence"]["schema"]["diff"]
    assert verdict["evidence"]["rollback"] == [
        "ALTER TABLE public.items DROP COLUMN IF EXISTS note;"
        "  -- lossy: values written since are lost"
    ]
    report = (out / "report.md").read_text()
    assert "APPROVE" in report and "public.items.note" in report
    assert json.loads((out / "verdict.json").read_text())["decision"] == "approve"


def test_non_idempotent_migration_is_rejected(repo):
    branch(
        repo,
        "builder/plain",
        {
            "migrations/002_note.sql": "ALTER TABLE items ADD COLUMN note text;\n",
        },
    )
    proc, verdict = validate(repo, "builder/plain")
    assert proc.returncode == 1, proc.stderr
    idem = criterion(verdict, "migrate.idempotent")
    assert idem["status"] == "failed"
    assert 'column "note" of relation "items" already exists' in idem["evidence"]
    assert "migrations/002_note.sql:1" in idem["evidence"]
    assert any(f["id"] == "non-idempotent-migration" for f in verdict["risk_factors"])


def test_destructive_migration_is_rated_critical(repo):
    branch(
        repo,
        "builder/drop",
        {
            "migrations/002_drop.sql": "ALTER TABLE items DROP COLUMN IF EXISTS name;\n",
        },
    )
    proc, verdict = validate(repo, "builder/drop")
    assert verdict["risk"] == "critical"
    assert verdict["decision"] == "reject" and proc.returncode == 1
    assert any(
        f["id"] == "destructive-ddl" and "public.items.name" in f["reason"]
        for f in verdict["risk_factors"]
    )
    assert any(f["rule"] == "ban-drop-column" and f["line"] == 1 for f in verdict["findings"])


def test_code_still_naming_a_dropped_column_is_listed_before_migrations(repo):
    """The application's readers first: a list that opened with revision files would hide
    the code that breaks once the drop is deployed."""
    branch(
        repo,
        "builder/drop-read",
        {
            "migrations/002_note.sql": "COMMENT ON TABLE items IS 'name is the label';\n",
            "migrations/003_drop.sql": "ALTER TABLE items DROP COLUMN IF EXISTS name;\n",
            "zz_app/read.py": "def label(row):\n    return row['name']\n",
        },
    )
    _proc, verdict = validate(repo, "builder/drop-read")
    reason = next(f["reason"] for f in verdict["risk_factors"] if f["id"] == "destructive-ddl")
    named = reason.split("the code still names it at ", 1)[1]
    assert named.startswith("zz_app/read.py:2"), named
    assert "migrations/002_note.sql:1" in named


def test_a_rule_disabled_in_the_policy_is_reported_as_suppressed(repo):
    commit(
        repo,
        {
            ".github/gatekeeper.yml": POLICY
            + "lint: {disabled: {ban-drop-column: planned in RFC-7}}\n"
        },
        "allow planned drops",
    )
    branch(
        repo, "builder/drop", {"migrations/002_drop.sql": "ALTER TABLE items DROP COLUMN name;\n"}
    )
    _, verdict = validate(repo, "builder/drop")
    assert not any(f["rule"] == "ban-drop-column" for f in verdict["findings"])
    (suppressed,) = verdict["evidence"]["suppressed_findings"]
    assert suppressed["rule"] == "ban-drop-column"
    assert suppressed["suppressed_reason"] == "planned in RFC-7"
    # The linter is quiet, but what the database saw still counts.
    assert verdict["risk"] == "critical"


def test_merge_conflict_is_a_reject_naming_the_files(repo):
    branch(repo, "builder/clash", {"migrations/001_items.sql": "CREATE TABLE items (id int);\n"})
    commit(repo, {"migrations/001_items.sql": "CREATE TABLE items (id uuid);\n"}, "main moves on")
    proc, verdict = validate(repo, "builder/clash")
    assert proc.returncode == 1
    merge = criterion(verdict, "merge")
    assert merge["status"] == "failed" and "migrations/001_items.sql" in merge["evidence"]
    assert criterion(verdict, "schema/items")["status"] == "skipped"


def test_unknown_ref_exits_2_and_names_it(repo):
    proc, verdict = validate(repo, "builder/does-not-exist")
    assert proc.returncode == 2 and verdict is None
    assert "unknown ref 'builder/does-not-exist'" in proc.stderr


def test_malformed_policy_exits_2_with_position(repo, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("migrations:\n  mode: directory\n  direcotry: migrations\n")
    proc, verdict = validate(repo, "main", "--policy", str(bad))
    assert proc.returncode == 2 and verdict is None
    assert "bad.yml:3:3: unknown key 'direcotry'" in proc.stderr
    assert "did you mean 'directory'?" in proc.stderr


def test_a_base_policy_that_is_not_utf8_exits_2_with_its_position(repo):
    policy = repo / ".github" / "gatekeeper.yml"
    policy.write_bytes(POLICY.encode() + b"# caf\xe9\n")
    git(repo, "commit", "-qam", "latin-1 comment")
    branch(repo, "builder/x", {"README": "x\n"})
    proc, verdict = validate(repo, "builder/x")
    assert proc.returncode == 2 and verdict is None, proc.stderr
    line = POLICY.count("\n") + 1
    assert f".github/gatekeeper.yml:{line}:6: not UTF-8" in proc.stderr
    assert "internal error" not in proc.stderr


def test_policy_comes_from_the_base_branch_not_the_change(repo):
    # The change tries to relax its own gate: no checks, approve everything.
    branch(
        repo,
        "builder/relax",
        {
            ".github/gatekeeper.yml": POLICY.replace("suites: [../checks]", "suites: []")
            + "decision: {risk: {low: approve, medium: approve, high: approve, "
            "critical: approve}}\n",
            "migrations/002_drop.sql": "DROP TABLE items;\n",
        },
    )
    proc, verdict = validate(repo, "builder/relax")
    assert proc.returncode == 1
    assert verdict["job"]["policy_source"].endswith(":.github/gatekeeper.yml")
    assert verdict["decision"] == "reject"
    assert criterion(verdict, "schema/items")["status"] == "failed"


def test_missing_extension_is_an_error_not_a_reject(repo):
    branch(
        repo,
        "builder/uuid",
        {
            "migrations/002_uuid.sql": 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp";\n',
        },
    )
    proc, verdict = validate(repo, "builder/uuid")
    assert proc.returncode == 2, proc.stderr
    assert verdict["decision"] == "error" and verdict["risk"] is None
    assert "'uuid-ossp'" in verdict["summary"]
    assert "database.binaries: system" in verdict["summary"]


def test_extensions_the_policy_lists_are_created_for_the_unprivileged_change(repo):
    """citext needs CREATE on the database at least; the change connects as its owner but no
    superuser, so the gate creates what the policy lists and the migration just uses it."""
    commit(repo, {".github/gatekeeper.yml": POLICY + "database: {extensions: [citext]}\n"}, "x")
    branch(
        repo,
        "builder/ext",
        {"migrations/002_email.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS email citext;\n"},
    )
    proc, verdict = validate(repo, "builder/ext")
    assert proc.returncode == 0, proc.stderr
    assert criterion(verdict, "migrate.apply")["status"] == "passed"


def test_migration_waiting_on_a_lock_is_bounded_by_lock_timeout(repo, tmp_path):
    """A long-running reader holds the table; the ALTER gives up after lock_timeout (1 s)."""
    locker = textwrap.dedent(
        """\
        import os, sys, psycopg
        url = os.environ["DATABASE_URL"]
        reader = psycopg.connect(url)
        reader.execute("CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY)")
        reader.commit()
        reader.execute("SELECT * FROM items")  # holds ACCESS SHARE until the transaction ends
        try:
            with psycopg.connect(url, autocommit=True) as writer:
                writer.execute("ALTER TABLE items ADD COLUMN IF NOT EXISTS note text")
        except psycopg.Error as exc:
            sys.exit(f"migration failed: {exc}")
        """
    )
    commit(
        repo,
        {
            ".github/gatekeeper.yml": POLICY.replace(
                "{mode: directory, directory: migrations}",
                "{mode: command, command: python migrate.py}",
            ).replace("suites: [../checks]", "suites: []"),
            "migrate.py": "import psycopg, os\n"
            "psycopg.connect(os.environ['DATABASE_URL'], autocommit=True).execute("
            "'CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY)')\n",
        },
        "command migrations",
    )
    branch(repo, "builder/lock", {"migrate.py": locker})
    started = time.monotonic()
    proc, verdict = validate(
        repo, "builder/lock", env={"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    apply = criterion(verdict, "migrate.apply")
    assert apply["status"] == "failed"
    assert "lock timeout" in apply["evidence"]
    # Bounded: without lock_timeout the ALTER would wait for the reader forever.
    assert elapsed < 200


def test_base_api_that_never_answers_is_an_error(repo):
    commit(
        repo,
        {
            ".github/gatekeeper.yml": POLICY.replace(
                "{mode: directory, directory: migrations}", "{mode: startup}"
            )
            + "api: {command: 'sleep 600', health_path: /healthz, start_timeout: 1.5}\n",
        },
        "an API that never answers",
    )
    branch(repo, "builder/any", {"README": "x\n"})
    proc, verdict = validate(repo, "builder/any")
    assert proc.returncode == 2, proc.stderr
    assert verdict["decision"] == "error"
    assert "did not answer" in verdict["summary"]
    assert "no baseline" in verdict["summary"]


@pytest.mark.parametrize(
    "decision",
    ["", "decision: {required: ['api/*']}\n"],
    ids=["default policy", "only api checks required"],
)
def test_build_failure_is_a_reject_with_its_output(repo, decision):
    # A policy that requires only some checks still cannot approve a change that does not
    # build: the gate's own steps are required whatever `decision.required` lists.
    commit(
        repo,
        {
            ".github/gatekeeper.yml": POLICY
            + decision
            + "build: {commands: ['test ! -e BROKEN || (echo broken build >&2; exit 3)']}\n",
        },
        "build step",
    )
    branch(repo, "builder/broken", {"BROKEN": "1\n"})
    proc, verdict = validate(repo, "builder/broken")
    assert proc.returncode == 1, proc.stderr
    assert verdict["decision"] == "reject"
    build = criterion(verdict, "build")
    assert build["status"] == "failed" and build["required"] and "exited 3" in build["evidence"]
    assert "broken build" in build["evidence"]


def _cmdline(process: psutil.Process) -> str:
    """A child can end between being listed and being read: it is then not the build."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_ctrl_c_during_a_run_leaves_nothing_behind(repo, request):
    commit(
        repo,
        {
            ".github/gatekeeper.yml": POLICY + "build: {commands: ['sleep 30']}\n",
        },
        "slow build",
    )
    branch(repo, "builder/slow", {"README": "x\n"})
    # A temp dir of its own: what the run leaves there is all its own doing. Not under
    # pytest's 0700 tmp_path: PostgreSQL's account must reach its cluster in there (the
    # sandbox starts before the build).
    scratch = Path(tempfile.mkdtemp(prefix="gatekeeper-ctrl-c-"))
    scratch.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    proc = subprocess.Popen(
        [*GATEKEEPER, "validate", "--repo", str(repo), "--head", "builder/slow"],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    children: list[psutil.Process] = []
    while time.monotonic() < deadline:
        children = [c for c in parent.children(recursive=True) if "sleep" in _cmdline(c)]
        if children:
            break
        time.sleep(0.1)
    assert children, "the build never started"
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    # At once, not once the builds are done: both sides build side by side, and the one
    # in the other thread must not be waited out (its `sleep 30` would take 30 s).
    assert time.monotonic() - interrupted < 20
    assert "interrupted" in stderr
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    # Only the shared PostgreSQL cache may stay (it is meant to): no sandbox, no clone.
    assert [p.name for p in scratch.iterdir() if not p.name.startswith("gatekeeper-pg-")] == []


def test_usage_errors_exit_2_with_the_message():
    proc = subprocess.run([*GATEKEEPER, "serve", "--port", "abc"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Invalid value for '--port'" in proc.stderr
