"""A hostile pull request through the App (the webhook, the queue, the fake GitHub): nothing it
prints reaches what the service posts, the clone holds no token, and the service's secrets
never reach the change. tests/security/ holds the CLI's and the pipeline's cases; this one
lives here, beside the fake GitHub's fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

from tests.github.conftest import POLICY, REPO, commit_all
from tests.helpers import run_git as git
from tests.helpers import running_with

from .test_faults import sandboxes, worker_process
from .test_service import (
    Running,
    make_service,
    serve_with_policy,
    synchronize,
    synchronized_run,
    wait_run,
)

CANARY = "canary-deploy-91c2e7b04f"
BUILD = """\
#!/bin/sh
env
cat /tmp/gatekeeper-clone-*/repo/.git/config 2>&1
git -C /tmp/gatekeeper-clone-*/repo config --get-regexp 'http.*' 2>&1
exit 3
"""


def test_a_hostile_build_leaks_nothing_to_what_the_app_posts(fake_github, store, repo, monkeypatch):
    monkeypatch.setenv("MY_DEPLOY_SECRET", CANARY)
    (repo / ".github" / "gatekeeper.yml").write_text(
        # Both sides build: the base, which has no build.sh, builds nothing.
        POLICY + "build: {commands: ['test ! -e build.sh || sh build.sh']}\n"
    )
    commit_all(repo, "gate: builds run build.sh")
    git(repo, "checkout", "-q", "builder/add-name")
    git(repo, "rebase", "-q", "main")
    (repo / "build.sh").write_text(BUILD)
    commit_all(repo, "hostile: print what can be found")
    git(repo, "checkout", "-q", "main")
    fake_github.add_repo(REPO, repo)
    fake_github.add_pull(REPO, 7, head="builder/add-name", user="builder-bot")
    fake_github.set_permission(REPO, "builder-bot", "write")
    service = make_service(fake_github, store)
    with Running(service) as app:
        answer = app.deliver(
            "pull_request", synchronize(fake_github, 7, fake_github.installation_id)
        )
        run = wait_run(store, answer.json()["run"])
    assert run["decision"] == "reject"
    build = next(c for c in run["verdict"]["criteria"] if c["id"] == "build")
    assert "exited 3" in build["evidence"]
    secrets = [
        CANARY,
        service.settings.webhook_secret.get_secret_value(),
        *fake_github.state.tokens,  # every installation token the fake issued
    ]
    posted = [r.raw_body.decode(errors="replace") for r in fake_github.requests]
    posted.append(json.dumps(run["verdict"]))
    for secret in secrets:
        assert not [body for body in posted if secret in body], "a secret was posted"
    # The clone's config was unreadable to the change, and holds no credential anyway.
    assert "x-access-token" not in build["evidence"]
    assert "Authorization" not in build["evidence"]


HANG = 'if [ -e hang ]; then cp /bin/sleep "$TMPDIR/{marker}" && "$TMPDIR/{marker}" 300; fi'


def test_the_watchdog_stops_a_stuck_stage_and_the_next_run_goes_ahead(fake_github, store, repo):
    """A build that hangs: the watchdog ends the run at its deadline, the build's processes
    are killed then (not when build.timeout would end them), and the worker, free again,
    validates the next push."""
    marker = f"gk-stuck-{os.getpid()}"
    extra = f"build: {{commands: ['{HANG.format(marker=marker)}'], timeout: 600}}\n"
    extra += "timeouts: {deadline: 8}\n"
    git(repo, "checkout", "-q", "builder/add-name")
    (repo / "hang").write_text("")
    commit_all(repo, "hostile: a build that never ends")
    git(repo, "checkout", "-q", "main")
    serve_with_policy(fake_github, repo, extra)
    with Running(make_service(fake_github, store)) as app:
        started = time.monotonic()
        run = synchronized_run(app, fake_github, store, timeout=60)
        assert run["state"] == "error" and "deadline of 8 s" in run["detail"]
        deadline = time.monotonic() + 10
        while running_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running_with(marker) == [], "the stuck build outlived its run"
        assert time.monotonic() - started < 8 + 20
        # The next push (the hang removed) is validated by the same worker.
        git(repo, "checkout", "-q", "builder/add-name")
        git(repo, "rm", "-q", "hang")
        commit_all(repo, "fix: no more hanging")
        git(repo, "checkout", "-q", "main")
        fake_github.add_pull(REPO, 7, head="builder/add-name", user="builder-bot")
        following = synchronized_run(app, fake_github, store, timeout=120)
    assert following["decision"] == "approve", following["detail"]


def test_sigterm_to_a_worker_with_a_stuck_stage_ends_within_the_grace(
    fake_github, store, repo, tmp_path
):
    """`gatekeeper worker` gets SIGTERM while a build hangs: it stops the stage after its
    grace (1 s here), hands the run back to the queue, and exits within grace + 10 s."""
    marker = f"gk-stuck-term-{os.getpid()}"
    extra = f"build: {{commands: ['{HANG.format(marker=marker)}'], timeout: 600}}\n"
    git(repo, "checkout", "-q", "builder/add-name")
    (repo / "hang").write_text("")
    commit_all(repo, "hostile: a build that never ends")
    git(repo, "checkout", "-q", "main")
    serve_with_policy(fake_github, repo, extra)
    worker = worker_process(fake_github, store, tmp_path, shutdown_grace=1)
    try:
        with Running(make_service(fake_github, store), worker=False) as app:
            answer = app.deliver(
                "pull_request", synchronize(fake_github, 7, fake_github.installation_id)
            )
            run_id = answer.json()["run"]
            deadline = time.monotonic() + 60
            while not running_with(marker):
                assert time.monotonic() < deadline, "the build never started"
                time.sleep(0.1)
            stopped = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            out, _ = worker.communicate(timeout=60)
            assert time.monotonic() - stopped < 1 + 10, out
            assert worker.returncode == 0, out
            assert running_with(marker) == []
            assert store.run(run_id)["state"] == "queued"  # handed back, not lost
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        shutil.rmtree(sandboxes(tmp_path), ignore_errors=True)


INTRUDER = """\
import glob, psycopg
for where in glob.glob("/tmp/gatekeeper-*/socket") + glob.glob("/tmp/*/*.socket"):
    try:
        with psycopg.connect(host=where, user="postgres", connect_timeout=3) as c:
            c.execute("INSERT INTO gatekeeper.deliveries (id, event) VALUES ('forged', 'push')")
        print("WROTE", where)
    except Exception as exc:
        print("refused", where, type(exc).__name__)
for port in (5432, 15432):
    try:
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", connect_timeout=3).close()
        print("WROTE tcp", port)
    except Exception as exc:
        print("refused tcp", port, type(exc).__name__)
raise SystemExit(3)
"""


def test_a_build_cannot_reach_the_services_store(fake_github, store, repo):
    """The build looks for every PostgreSQL socket of the host and tries the superuser: the
    store holds no forged delivery afterwards."""
    extra = "build: {commands: ['test ! -e intruder.py || python3 intruder.py']}\n"
    git(repo, "checkout", "-q", "builder/add-name")
    (repo / "intruder.py").write_text(INTRUDER)
    commit_all(repo, "hostile: write into the gate's store")
    git(repo, "checkout", "-q", "main")
    serve_with_policy(fake_github, repo, extra)
    with Running(make_service(fake_github, store)) as app:
        run = synchronized_run(app, fake_github, store, timeout=120)
    evidence = next(c for c in run["verdict"]["criteria"] if c["id"] == "build")["evidence"]
    assert "refused" in evidence and "WROTE" not in evidence, evidence
    with store.connect() as conn:
        forged = conn.execute("SELECT count(*) AS n FROM gatekeeper.deliveries WHERE id = 'forged'")
        assert forged.fetchone()["n"] == 0
