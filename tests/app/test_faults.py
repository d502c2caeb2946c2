"""Faults the App must survive without losing or duplicating a verdict: a worker killed
mid-run, its database restarted while deliveries arrive, GitHub failing for a while, the same
delivery three times, a burst of pushes. Each test ends by checking that every accepted
delivery's newest head SHA got exactly one final status.

Real PostgreSQL, real worker processes where a process must die, the fake GitHub over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app.store import Store
from bot.sandbox.local import LocalSandbox
from tests.github.conftest import REPO, commit_all
from tests.helpers import free_port, gatekeeper_process
from tests.helpers import run_git as git

from .test_service import (
    FAST,
    Running,
    app_environment,
    command,
    make_service,
    serve_with_policy,
    synchronize,
    synchronized_run,
    wait_run,
)


def finals(fake, sha: str) -> list[dict[str, Any]]:
    return [s for s in fake.statuses(REPO, sha) if s["state"] != "pending"]


def push(fake, repo: Path, n: int) -> str:
    """Another commit on the builder branch, and the pull request's head moved to it."""
    git(repo, "checkout", "-q", "builder/add-name")
    (repo / "migrations" / f"{100 + n:03d}_note.sql").write_text(
        f"ALTER TABLE items ADD COLUMN IF NOT EXISTS note{n} text;\n"
    )
    sha = commit_all(repo, f"fix: note {n}")
    git(repo, "checkout", "-q", "main")
    fake.add_pull(REPO, 7, head="builder/add-name", user="builder-bot")
    return sha


def worker_process(fake, store: Store, tmp_path: Path, **settings: Any) -> subprocess.Popen[str]:
    """`gatekeeper worker` as a user starts it: configuration from the environment only. Its
    sandboxes live in their own temp dir, where the next one sweeps what a SIGKILL left."""
    env = {
        **app_environment(fake, store, tmp_path),
        **{f"GATEKEEPER_{k.upper()}": str(v) for k, v in {**FAST, **settings}.items()},
        "TMPDIR": str(sandboxes(tmp_path)),
    }
    return gatekeeper_process("worker", env=env, start_new_session=True)


def sandboxes(tmp_path: Path) -> Path:
    """A temp dir the sandbox's PostgreSQL account can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.gettempdir()) / f"gatekeeper-faults-{tmp_path.name}"
    path.mkdir(mode=0o711, exist_ok=True)
    path.chmod(0o711)
    return path


def postmasters(tmp_path: Path) -> list[tuple[Path, int]]:
    """The workers' sandboxes with a PostgreSQL, as their owner.json records them."""
    found = []
    for owner in sandboxes(tmp_path).glob("gatekeeper-*/owner.json"):
        with suppress(FileNotFoundError):
            record = json.loads(owner.read_text())
            if record["postgres"] is not None:
                found.append((owner.parent, record["postgres"][0]))
    return found


@pytest.fixture(autouse=True)
def _remove_sandboxes(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(sandboxes(tmp_path), ignore_errors=True)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_worker_killed_mid_run_has_its_job_picked_up_and_the_pending_finished(
    served, store, tmp_path
):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    first = worker_process(fake, store, tmp_path)
    try:
        with Running(make_service(fake, store), worker=False) as app:
            answer = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
            assert answer.status_code == 202, answer.text
            run_id = answer.json()["run"]
            # Killed in the middle of the validation: its sandbox's PostgreSQL is up.
            wait_for(lambda: postmasters(tmp_path), "the first worker's sandbox")
            assert store.run(run_id)["state"] == "running"
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            ((left, postmaster),) = postmasters(tmp_path)
            os.kill(postmaster, 0)  # still running: nobody stopped it
            # The next worker's sandbox sweeps it away before starting its own.
            second = worker_process(fake, store, tmp_path)
            try:
                run = wait_run(store, run_id, timeout=120)
            finally:
                second.send_signal(signal.SIGTERM)
                out, _ = second.communicate(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert second.returncode == 0, out
    assert run["state"] == "done" and run["decision"] == "approve", (run["detail"], out[-3000:])
    assert not left.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(postmaster, 0)
    assert run["attempts"] == 2
    assert [s["state"] for s in finals(fake, sha)] == ["success"]
    (check,) = fake.check_runs(REPO)  # the killed worker's, carried on and completed
    assert check.data["status"] == "completed" and check.data["conclusion"] == "success"


def test_a_worker_drains_on_sigterm_and_requeues_what_overstays_the_grace(served, store, tmp_path):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    fake.delay("checks/create", 8.0, times=1)  # longer than the grace period below
    first = worker_process(fake, store, tmp_path, shutdown_grace=1)
    with Running(make_service(fake, store), worker=False) as app:
        answer = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
        run_id = answer.json()["run"]
        wait_for(lambda: fake.statuses(REPO, sha), "the pending status")
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=60)
        assert first.returncode == 0, out
        assert store.run(run_id)["state"] == "queued", out  # handed back, not lost
        second = worker_process(fake, store, tmp_path)
        try:
            run = wait_run(store, run_id, timeout=120)
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
    assert run["state"] == "done" and run["decision"] == "approve"
    assert [s["state"] for s in finals(fake, sha)] == ["success"]


def test_the_database_restarting_while_deliveries_arrive_loses_nothing(served, tmp_path):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    port = free_port()
    datadir = sandboxes(tmp_path) / "pg"
    database = LocalSandbox(database="gatekeeper", datadir=datadir, port=port)
    database.start()
    store = Store(database.database_url)
    try:
        store.migrate()
        with Running(make_service(fake, store)) as app:
            body = synchronize(fake, 7, fake.installation_id)
            database.stop()
            refused = app.deliver("pull_request", body, delivery="during-restart")
            assert refused.status_code == 503, refused.text
            assert "database" in refused.json()["message"]
            database.start()
            # GitHub's redelivery (or the service's own redelivery sweep) brings it back; the
            # pool reconnects with backoff, so the first tries may still be refused.
            answers = [app.deliver("pull_request", body, delivery="during-restart")]
            deadline = time.monotonic() + 60
            while answers[-1].status_code == 503 and time.monotonic() < deadline:
                time.sleep(1)
                answers.append(app.deliver("pull_request", body, delivery="during-restart"))
            again = answers[-1]
            assert again.status_code == 202, again.text
            run = wait_run(store, again.json()["run"], timeout=120)
            duplicate = app.deliver("pull_request", body, delivery="during-restart")
            assert duplicate.status_code == 200
    finally:
        store.close()
        database.stop()
    assert run["state"] == "done" and run["decision"] == "approve"
    assert [s["state"] for s in finals(fake, sha)] == ["success"]


def test_github_answering_502_and_429_for_a_while_delays_but_does_not_lose(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    fake.fail_next("*", status=502, times=8)
    fake.rate_limit_next("*", retry_after=1, status=429, times=4)
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
        assert answer.status_code == 202
        run = wait_run(store, answer.json()["run"], timeout=180)
    assert run["state"] == "done" and run["decision"] == "approve", run["detail"]
    assert [s["state"] for s in finals(fake, sha)] == ["success"]
    assert len(fake.comments(REPO, 7)) == 1


def test_the_same_delivery_three_times_at_once_runs_once(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    body = synchronize(fake, 7, fake.installation_id)
    with Running(make_service(fake, store)) as app:
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(app.deliver("pull_request", body, delivery="x3"))
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 200, 202], [a.text for a in answers]
        (accepted,) = [a for a in answers if a.status_code == 202]
        run = wait_run(store, accepted.json()["run"])
        time.sleep(1)  # room for a duplicate to show up, if one were going to
    assert run["state"] == "done"
    with store.connect() as conn:
        assert conn.execute("SELECT count(*) AS n FROM gatekeeper.runs").fetchone()["n"] == 1
    assert [s["state"] for s in finals(fake, sha)] == ["success"]
    assert len(fake.check_runs(REPO)) == 1


def test_ten_pushes_arriving_at_once_validate_only_the_newest(served, store, repo):
    fake = served
    shas = [push(fake, repo, n) for n in range(10)]
    bodies = []
    for sha in shas:  # each delivery as GitHub sent it, naming the head it was sent for
        body = synchronize(fake, 7, fake.installation_id)
        body["pull_request"]["head"]["sha"] = sha
        bodies.append(body)
    with Running(make_service(fake, store, workers=2, repo_concurrency=2)) as app:
        answers: dict[str, httpx.Response] = {}

        def send(body: dict[str, Any]) -> None:
            answers[body["pull_request"]["head"]["sha"]] = app.deliver("pull_request", body)

        threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {a.status_code for a in answers.values()} == {202}
        runs = sorted((a.json()["run"], sha) for sha, a in answers.items())
        newest_run, newest = runs[-1]  # accepted last, whatever order they were sent in
        last = wait_run(store, newest_run, timeout=120)
        wait_for(
            lambda: all(store.run(r)["state"] not in ("queued", "running") for r, _ in runs),
            "every run to end",
        )
    assert last["state"] == "done" and last["decision"] == "approve"
    assert [s["state"] for s in finals(fake, newest)] == ["success"]
    ended = [store.run(r) for r, _ in runs[:-1]]
    assert {r["state"] for r in ended} == {"superseded"}
    assert all(r["decision"] is None for r in ended)  # none was validated to the end
    for _, sha in runs[:-1]:  # at most the superseded notice, never a verdict
        assert all("superseded" in s["description"] for s in finals(fake, sha))


def test_the_watchdog_ends_a_run_past_its_deadline_in_error_once(served, store, repo):
    fake = served
    sha = serve_with_policy(fake, repo, "timeouts: {deadline: 2}\n")
    fake.delay("checks/create", 6.0, times=1)  # the run overstays its 2 s
    with Running(make_service(fake, store)) as app:
        run = synchronized_run(app, fake, store, timeout=60)
        time.sleep(8)  # the worker wakes from its slow call: it must not post a verdict
    assert run["state"] == "error"
    assert "no verdict within the policy's timeouts.deadline of 2 s" in run["detail"]
    assert [s["state"] for s in finals(fake, sha)] == ["error"]
    assert "deadline" in finals(fake, sha)[0]["description"]
    assert store.run(run["id"])["decision"] is None


def test_a_final_status_github_refused_is_posted_again(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
        run_id = answer.json()["run"]
        wait_for(lambda: store.run(run_id)["check_run_id"], "the check run")
        # The next status is the verdict: GitHub refuses it, and not in a way worth retrying.
        fake.fail_next("repos/create-commit-status", status=422, message="Validation Failed")
        wait_for(lambda: store.run(run_id)["state"] == "done", "the run to end")
        run = wait_run(store, run_id)
    assert run["decision"] == "approve" and not run["unposted"]
    assert [s["state"] for s in finals(fake, sha)] == ["success"]
    (check,) = fake.check_runs(REPO)
    assert check.data["conclusion"] == "success"


def test_runs_needing_one_shared_resource_wait_in_line_and_see_their_place(served, store, repo):
    fake = served
    serve_with_policy(fake, repo, "resource: staging-db\n")
    git(repo, "checkout", "-qb", "builder/other", "builder/add-name")
    (repo / "migrations" / "003_other.sql").write_text(
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS other text;\n"
    )
    commit_all(repo, "fix: other")
    git(repo, "checkout", "-q", "main")
    fake.add_pull(REPO, 8, head="builder/other", user="builder-bot")
    shas = [fake.state.repos[REPO].pulls[n].head_sha for n in (7, 8)]
    fake.delay("checks/update", 1.0)  # every check run update is slow: the line is visible
    # Two runs at once would be allowed, but for the resource.
    with Running(make_service(fake, store, workers=2, repo_concurrency=2)) as app:
        runs = [
            app.deliver("pull_request", synchronize(fake, n, fake.installation_id)).json()["run"]
            for n in (7, 8)
        ]
        ended = [wait_run(store, r, timeout=180) for r in runs]
    assert [r["decision"] for r in ended] == ["approve", "approve"]
    for sha in shas:
        assert [s["state"] for s in finals(fake, sha)] == ["success"]
    titles = [
        b["output"]["title"] for b in fake.bodies("checks/update") if b.get("status") == "queued"
    ]
    # One at a time: the second started validating only after the first had finished.
    first, second = sorted(ended, key=lambda r: r["verdict"]["started_at"])
    started = datetime.fromisoformat(second["verdict"]["started_at"])
    assert started >= first["finished_at"].replace(microsecond=0)
    assert "waiting for staging-db: 2nd in line" in titles


def test_a_newer_delivery_for_the_same_commit_replaces_the_running_one(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    body = synchronize(fake, 7, fake.installation_id)
    # Two runs may go at once, so only the supersede keeps the commit to one active run.
    with Running(make_service(fake, store, workers=2, repo_concurrency=2)) as app:
        first = app.deliver("pull_request", body).json()["run"]
        wait_for(lambda: store.run(first)["check_run_id"], "the first run's check run")
        second = app.deliver("pull_request", body).json()["run"]
        replaced = wait_run(store, first)
        done = wait_run(store, second)
    assert replaced["state"] == "superseded" and replaced["decision"] is None
    assert done["state"] == "done" and done["decision"] == "approve"
    assert [s["state"] for s in finals(fake, sha)] == ["success"]  # no "superseded" error
    checks = {c.id: c.data for c in fake.check_runs(REPO)}
    assert checks[replaced["check_run_id"]]["conclusion"] == "cancelled"
    assert checks[done["check_run_id"]]["conclusion"] == "success"


def test_a_command_resolved_after_a_newer_push_steps_aside(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    fake.set_permission(REPO, "maintainer", "write")
    fake.delay("pulls/get", 5.0, times=1)  # the command's run learns the head SHA late
    with Running(make_service(fake, store, workers=2, repo_concurrency=2)) as app:
        asked = app.deliver("issue_comment", command(fake, 7, "/gatekeeper run", "maintainer"))
        assert asked.status_code == 202, asked.text
        # Accepted while the command's run still waits for the pull request: newer.
        pushed = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
        stepped_aside = wait_run(store, asked.json()["run"])
        done = wait_run(store, pushed.json()["run"])
    assert stepped_aside["state"] == "superseded" and stepped_aside["check_run_id"] is None
    assert done["state"] == "done" and done["decision"] == "approve"
    assert [s["state"] for s in finals(fake, sha)] == ["success"]
    assert len(fake.check_runs(REPO)) == 1
