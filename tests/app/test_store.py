"""The service's schema migrations and the watchdog's deadline, on a real PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from bot.app.service import DEADLINE_SAMPLES, Service
from bot.app.settings import Settings
from bot.app.store import MIGRATIONS, Store
from bot.github.auth import TokenCredentials
from bot.github.client import GitHubClient
from tests.helpers import free_port, gatekeeper_process, wait_serving


def versions(store: Store) -> list[int]:
    with store.connect() as conn:
        rows = conn.execute("SELECT version FROM gatekeeper.schema_migrations ORDER BY 1")
        return [r["version"] for r in rows]


def test_migrations_apply_once_in_order_and_are_safe_to_rerun(fresh_database):
    store = Store(fresh_database)
    try:
        assert store.migrate() == [m.version for m in MIGRATIONS]
        assert store.migrate() == []
        assert versions(store) == [m.version for m in MIGRATIONS]
    finally:
        store.close()


def test_processes_starting_together_apply_each_migration_once(fresh_database):
    stores = [Store(fresh_database) for _ in range(3)]
    applied: list[list[int]] = []
    threads = [threading.Thread(target=lambda s=s: applied.append(s.migrate())) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(applied, key=len) == [[], [], [m.version for m in MIGRATIONS]]
        assert versions(stores[0]) == [m.version for m in MIGRATIONS]
    finally:
        for store in stores:
            store.close()


def test_a_database_from_before_versioning_is_adopted_with_its_runs(fresh_database):
    # What the unversioned schema left: the tables of migration 1, a run, no bookkeeping.
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA gatekeeper")
        conn.execute(MIGRATIONS[0].sql())
        conn.execute(
            "INSERT INTO gatekeeper.runs (repository, head_sha, target, state)"
            " VALUES ('octo/x', 'abc', '{}', 'done')"
        )
    store = Store(fresh_database)
    try:
        assert store.migrate() == [m.version for m in MIGRATIONS]
        (run,) = store.in_state("done")
        assert run["repository"] == "octo/x" and run["attempts"] == 0 and not run["unposted"]
    finally:
        store.close()


def service(store: Store, **settings) -> Service:
    config = Settings(webhook_secret="s", database_url=store.database_url, **settings)
    return Service(config, store, GitHubClient("http://127.0.0.1:9", TokenCredentials("x")))


def finished_run(store: Store, seconds: float, decision: str = "approve") -> None:
    sha = uuid.uuid4().hex
    target = {"repository": "octo/x", "pr_number": None, "head_sha": sha}
    run_id = store.accept(str(uuid.uuid4()), "pull_request", "synchronize", target, sha)
    created = datetime.now(UTC) - timedelta(hours=1)
    store.update(
        run_id,
        state="done",
        decision=decision,
        created_at=created,
        finished_at=created + timedelta(seconds=seconds),
    )


def test_the_deadline_is_the_default_until_enough_runs_then_their_p95_plus_a_margin(store):
    gate = service(store, deadline=900, deadline_margin=60)
    for seconds in range(1, DEADLINE_SAMPLES):
        finished_run(store, seconds)
    finished_run(store, 5000, decision="error")  # errors say nothing about how long work takes
    assert gate.deadline()[0] == 900
    assert f"only {DEADLINE_SAMPLES - 1} successful runs" in gate.deadline()[1]
    finished_run(store, DEADLINE_SAMPLES)
    seconds, why = gate.deadline()
    # p95 of 1..20 s (interpolated: 19.05 s) plus the 60 s margin.
    assert abs(seconds - 79.05) < 0.01
    assert "p95 of the last 20 successful runs" in why


def test_gatekeeper_worker_refuses_to_start_without_a_shared_database():
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "worker"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "gatekeeper worker needs DATABASE_URL" in done.stderr


def test_gatekeeper_worker_names_a_bad_setting(fresh_database):
    env = {**os.environ, "DATABASE_URL": fresh_database, "GATEKEEPER_WORKERS": "0"}
    env["GATEKEEPER_WEBHOOK_SECRET"] = "s"
    done = subprocess.run(
        [sys.executable, "-m", "bot", "worker"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "GATEKEEPER_WORKERS: Input should be greater than or equal to 1" in done.stderr


def test_serve_keeps_its_embedded_database_across_a_sigkill():
    """No DATABASE_URL: `serve` runs its own PostgreSQL in the state dir. Killed outright, it
    leaves that server running; the next `serve` sweeps it away and finds its data intact."""
    root = Path(tempfile.mkdtemp(prefix="gatekeeper-state-test-"))
    root.chmod(0o711)  # the embedded server's account must reach its data dir
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        GATEKEEPER_STATE_DIR=str(root / "state"),
        GATEKEEPER_WEBHOOK_SECRET="s",
        GATEKEEPER_GITHUB_TOKEN="unused",
        GATEKEEPER_GITHUB_API_URL="http://127.0.0.1:9",
    )
    url = f"http://127.0.0.1:{port}"
    body = b'{"action": "created"}'
    headers = {
        "X-GitHub-Event": "star",
        "X-GitHub-Delivery": "kept-1",
        "X-Hub-Signature-256": "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest(),
    }

    def serve() -> subprocess.Popen[str]:
        process = gatekeeper_process("serve", "--port", str(port), env=env, start_new_session=True)
        wait_serving(
            process, f"{url}/readyz", timeout=90, what="serve did not become ready", every=0.2
        )
        return process

    first = serve()
    try:
        answer = httpx.post(f"{url}/webhook", content=body, headers=headers, timeout=10)
        assert answer.status_code == 200 and answer.json()["message"].startswith("ignored")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        second = serve()
        try:
            again = httpx.post(f"{url}/webhook", content=body, headers=headers, timeout=10)
            assert again.json()["message"] == "duplicate delivery"  # remembered across the kill
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=90) == 0
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
        left = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True)
        assert left.stdout == ""  # the graceful stop took its PostgreSQL with it
    finally:
        subprocess.run(["pkill", "-KILL", "-f", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account")
def test_a_state_dir_postgresql_cannot_enter_is_one_clear_line(tmp_path):
    """`sudo gatekeeper serve` with a 0700 state dir of root's: the embedded store's account
    cannot enter it, and the error says which directory and what to do, in one line."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"GATEKEEPER_STATE_DIR": str(state), "GATEKEEPER_WEBHOOK_SECRET": "s"}
    env["GATEKEEPER_GITHUB_TOKEN"] = "a-token-never-used"  # the store starts before GitHub
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"{state} cannot be entered by the account gatekeeper-pg" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3
