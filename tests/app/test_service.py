"""The GitHub App end to end: signed real payloads in, statuses, check runs and one sticky
comment out, over real HTTP to a fake GitHub whose every request is checked against
GitHub's OpenAPI description. The service's own store is a real PostgreSQL.

Payloads are the shared real examples, retargeted in each test at the repository the fake
serves (their repository, numbers and SHAs are rewritten; the shapes are GitHub's).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from bot.app.server import working
from bot.app.service import Service
from bot.app.settings import Settings
from bot.app.store import Store
from bot.app.webhook import create_app
from bot.github import events
from bot.github.auth import AppCredentials
from bot.github.client import GitHubClient
from bot.github.publish import Publisher
from tests.github.conftest import POLICY, REPO, commit_all
from tests.helpers import WEBHOOKS, free_port, gatekeeper_process, wait_serving
from tests.helpers import run_git as git

SECRET = "it's a secret to everybody"


class Running:
    """The webhook app served by uvicorn on a loopback port, with its Service, its sweeps and
    (unless `worker` is False) a queue worker, as `gatekeeper serve` runs them."""

    def __init__(self, service: Service, worker: bool = True):
        self.service = service
        config = uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.background = working(service, service.settings, worker=worker)

    def __enter__(self) -> Running:
        self.background.__enter__()
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the webhook server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.background.__exit__(None, None, None)

    def deliver(
        self,
        event: str,
        payload: Any,
        *,
        delivery: str | None = None,
        secret: str | None = SECRET,
        body: bytes | None = None,
    ) -> httpx.Response:
        data = body if body is not None else json.dumps(payload).encode()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "Content-Type": "application/json",
        }
        if secret is not None:
            digest = hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = f"sha256={digest}"
        return httpx.post(f"{self.url}/webhook", content=data, headers=headers, timeout=10)


# Every wait of the queue shrunk to test scale: sweeps, heartbeats, retries, the grace.
FAST = {
    "sweep_interval": 0.2,
    "heartbeat": 0.5,
    "stalled_after": 2.0,
    "backoff": 1,
    "repost_after": 0.5,
    "shutdown_grace": 5.0,
    "log_json": False,
}


def make_service(fake, store: Store, **overrides: Any) -> Service:
    host = fake.url.removeprefix("http://")
    settings = Settings(
        webhook_secret=SECRET,
        app_id=fake.app_id,
        github_api_url=fake.url,
        clone_url=f"http://{host}/{{repository}}.git",
        database_url=store.database_url,
        **{**FAST, **overrides},
    )
    credentials = AppCredentials(fake.app_id, fake.app_private_key, api_url=fake.url)
    service = Service(settings, store, GitHubClient(fake.url, credentials))
    service.start()
    return service


def payload(name: str) -> dict[str, Any]:
    path = WEBHOOKS / f"{name}.json"
    if not path.exists():
        pytest.fail(f"missing webhook fixture {path}")
    return json.loads(path.read_text())


def synchronize(fake, number: int, installation_id: int) -> dict[str, Any]:
    """The real synchronize payload, pointed at pull request `number` of REPO in the fake."""
    pull = fake.state.repos[REPO].pulls[number]
    data = copy.deepcopy(payload("pull_request.synchronize"))
    data["number"] = number
    pr = data["pull_request"]
    pr["number"] = number
    pr["draft"] = False
    pr["author_association"] = "MEMBER"
    pr["user"]["login"] = pull.user
    for side, ref, sha in (("head", pull.head, pull.head_sha), ("base", pull.base, pull.base_sha)):
        pr[side]["ref"], pr[side]["sha"] = ref, sha
        pr[side]["repo"]["full_name"] = pull.head_repo if side == "head" else REPO
    data["repository"]["full_name"] = REPO
    data["repository"]["clone_url"] = f"{fake.url}/{REPO}.git"
    data["installation"] = {"id": installation_id}
    return data


def wait_final(fake, sha: str, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = fake.statuses(REPO, sha)
        if statuses and statuses[-1]["state"] != "pending":
            return statuses
        time.sleep(0.1)
    raise AssertionError(f"no final status for {sha}: {fake.statuses(REPO, sha)}")


def wait_run(store: Store, run_id: int, timeout: float = 120) -> dict[str, Any]:
    """Until the run's row is final and its final status posted (the service ends the run in
    the store first, then posts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.run(run_id)
        if run["state"] not in ("queued", "running", "blocked") and not run["unposted"]:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {store.run(run_id)['state']}")


def synchronized_run(app: Running, fake, store: Store, timeout: float = 120) -> dict[str, Any]:
    """Pull request 7's real synchronize delivered to `app`; its run once `wait_run` ends."""
    answer = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
    return wait_run(store, answer.json()["run"], timeout=timeout)


def test_synchronize_posts_pending_then_the_verdict_check_run_and_one_comment(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
        assert answer.status_code == 202, answer.text
        run = wait_run(store, answer.json()["run"])
    statuses = fake.statuses(REPO, sha)
    assert statuses[0]["state"] == "pending"
    assert statuses[-1]["state"] == "success", statuses[-1]
    assert statuses[-1]["context"] == "gatekeeper"
    assert statuses[-1]["description"].startswith("approve")
    (check,) = fake.check_runs(REPO)
    assert check.data["status"] == "completed" and check.data["conclusion"] == "success"
    (comment,) = fake.comments(REPO, 7)
    assert "<!-- gatekeeper:report -->" in comment["body"]
    assert "Gatekeeper: APPROVE" in comment["body"]
    assert run["state"] == "done" and run["decision"] == "approve"


def test_redelivery_is_acknowledged_and_not_run_twice(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    body = synchronize(fake, 7, fake.installation_id)
    with Running(make_service(fake, store)) as app:
        first = app.deliver("pull_request", body, delivery="d-1")
        assert first.status_code == 202
        wait_run(store, first.json()["run"])
        again = app.deliver("pull_request", body, delivery="d-1")
        assert again.status_code == 200 and again.json()["message"] == "duplicate delivery"
        time.sleep(0.5)
    assert len(fake.check_runs(REPO)) == 1
    assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending", "success"]


@pytest.mark.parametrize(
    ("secret", "status"),
    [(None, 401), ("wrong secret", 401)],
    ids=["missing signature", "bad signature"],
)
def test_unsigned_or_badly_signed_deliveries_are_refused_and_store_nothing(
    served, store, secret, status
):
    with Running(make_service(served, store)) as app:
        answer = app.deliver(
            "pull_request",
            synchronize(served, 7, served.installation_id),
            secret=secret,
            delivery="bad-1",
        )
    assert answer.status_code == status
    with psycopg.connect(store.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM gatekeeper.deliveries").fetchone()[0] == 0
    assert served.statuses(REPO, served.state.repos[REPO].pulls[7].head_sha) == []


def test_bad_bodies_get_clear_answers(served, store):
    with Running(make_service(served, store, max_body_bytes=100_000)) as app:
        huge = app.deliver("pull_request", None, body=b"{" + b" " * 200_000 + b"}")
        assert huge.status_code == 413
        broken = app.deliver("pull_request", None, body=b"{not json")
        assert broken.status_code == 400 and "not JSON" in broken.json()["message"]
        missing = synchronize(served, 7, served.installation_id)
        del missing["pull_request"]["head"]["sha"]
        malformed = app.deliver("pull_request", missing)
        assert malformed.status_code == 400
        assert "pull_request.head.sha" in malformed.json()["message"]
        unknown = app.deliver("marketplace_purchase", {"action": "purchased"})
        assert unknown.status_code == 200 and "ignored" in unknown.json()["message"]
        ping = app.deliver("ping", payload("ping"))
        assert ping.status_code == 200
    assert served.statuses(REPO, served.state.repos[REPO].pulls[7].head_sha) == []


def test_a_newer_push_supersedes_the_older_run(served, store, repo):
    fake = served
    old_sha = fake.state.repos[REPO].pulls[7].head_sha
    fake.delay("checks/create", 2.0, times=1)  # keeps the first run busy while the push lands
    with Running(make_service(fake, store)) as app:
        assert (
            app.deliver("pull_request", synchronize(fake, 7, fake.installation_id)).status_code
            == 202
        )
        # The builder pushes again while the first run is in progress.
        git(repo, "checkout", "-q", "builder/add-name")
        (repo / "migrations" / "003_note.sql").write_text(
            "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"
        )
        new_sha = commit_all(repo, "fix: and a note")
        git(repo, "checkout", "-q", "main")
        fake.add_pull(REPO, 7, head="builder/add-name", user="builder-bot")
        assert (
            app.deliver("pull_request", synchronize(fake, 7, fake.installation_id)).status_code
            == 202
        )
        second = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
        old = wait_final(fake, old_sha)
        new = wait_final(fake, new_sha)
        wait_run(store, second.json()["run"])
    assert old[-1]["state"] == "error" and f"superseded by {new_sha[:7]}" in old[-1]["description"]
    assert new[-1]["state"] == "success"


def test_a_fork_waits_for_ok_to_test(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    body = synchronize(fake, 7, fake.installation_id)
    body["pull_request"]["head"]["repo"]["full_name"] = "stranger/inventory"
    body["pull_request"]["author_association"] = "FIRST_TIME_CONTRIBUTOR"
    with Running(make_service(fake, store)) as app:
        assert app.deliver("pull_request", body).status_code == 202
        deadline = time.monotonic() + 30
        while not fake.statuses(REPO, sha) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    (status,) = fake.statuses(REPO, sha)
    assert status["state"] == "pending" and "ok-to-test" in status["description"]
    assert fake.check_runs(REPO) == []


def test_a_run_whose_worker_died_is_handed_on_and_finished_once(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    routed = events.route("pull_request", synchronize(fake, 7, fake.installation_id), "crashed-1")
    run_id = store.accept(
        "crashed-1", "pull_request", "synchronize", routed.model_dump(mode="json"), routed.head_sha
    )
    service = make_service(fake, store)
    # What a worker killed mid-run leaves: the run `running`, its job `doing` under a worker
    # whose heartbeat stopped, a pending status and an in-progress check run on GitHub.
    publisher = Publisher(service.github.for_installation(fake.installation_id), REPO)
    publisher.pending(sha, "validating: merge, migrate, checks")
    check_run_id = publisher.start_check(sha)
    job_id = store.run(run_id)["job_id"]
    with store.connect() as conn:
        dead = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat)"
            " VALUES (now() - interval '1 hour') RETURNING id"
        ).fetchone()["id"]
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
            (dead, job_id),
        )
    assert store.claim(run_id, job_id) is not None
    store.update(run_id, check_run_id=check_run_id)

    with Running(service):
        run = wait_run(store, run_id)
    assert run["state"] == "done" and run["decision"] == "approve" and run["attempts"] == 2
    finals = [s for s in fake.statuses(REPO, sha) if s["state"] != "pending"]
    assert [s["state"] for s in finals] == ["success"]
    (check,) = fake.check_runs(REPO)  # the interrupted attempt's check run, completed
    assert check.data["status"] == "completed" and check.data["conclusion"] == "success"


def test_failed_deliveries_missed_while_down_are_redelivered(served, store):
    fake = served
    seen = fake.add_delivery(event="pull_request", action="synchronize", status_code=200)
    missed = fake.add_delivery(event="pull_request", action="synchronize", status_code=502)
    service = make_service(fake, store)
    assert service.redeliver_failed() == 1
    assert fake.redelivery_attempts == [missed.id]
    assert seen.id not in fake.redelivery_attempts


def serve_with_policy(fake, repo: Path, extra: str) -> str:
    """REPO whose base policy gains `extra`, PR 7 rebased on it; returns the PR's head SHA."""
    (repo / ".github" / "gatekeeper.yml").write_text(POLICY + extra)
    commit_all(repo, "gate: policy change")
    git(repo, "checkout", "-q", "builder/add-name")
    git(repo, "rebase", "-q", "main")
    git(repo, "checkout", "-q", "main")
    fake.add_repo(REPO, repo)
    fake.add_pull(REPO, 7, head="builder/add-name", user="builder-bot")
    fake.set_permission(REPO, "builder-bot", "write")
    return fake.state.repos[REPO].pulls[7].head_sha


def test_the_policy_can_ask_for_a_review_and_risk_labels(fake_github, store, repo):
    serve_with_policy(fake_github, repo, "report: {review: true, labels: true}\n")
    with Running(make_service(fake_github, store)) as app:
        answer = app.deliver(
            "pull_request", synchronize(fake_github, 7, fake_github.installation_id)
        )
        run = wait_run(store, answer.json()["run"])
    assert run["decision"] == "approve"
    assert [r["state"] for r in fake_github.reviews(REPO, 7)] == ["APPROVED"]
    assert fake_github.labels(REPO, 7) == ["risk:low"]


def app_environment(fake, store: Store, tmp_path: Path) -> dict[str, str]:
    """The environment a user gives `gatekeeper serve` or `worker` for the App on `fake`: the
    webhook secret, the App's id and key file (written to `tmp_path`), GitHub's API and clone
    URLs, and the service's database."""
    key = tmp_path / "app.pem"
    key.write_text(fake.app_private_key)
    host = fake.url.removeprefix("http://")
    return {
        **os.environ,
        "GATEKEEPER_WEBHOOK_SECRET": SECRET,
        "GATEKEEPER_APP_ID": str(fake.app_id),
        "GATEKEEPER_APP_PRIVATE_KEY_FILE": str(key),
        "GATEKEEPER_GITHUB_API_URL": fake.url,
        "GATEKEEPER_CLONE_URL": f"http://{host}/{{repository}}.git",
        "DATABASE_URL": store.database_url,
    }


def test_gatekeeper_serve_as_a_user_runs_it(served, store, tmp_path):
    """The command a user runs, as a process: configuration from the environment only."""
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    port = free_port()
    token = "serve-test-dashboard-token"
    env = {
        **app_environment(fake, store, tmp_path),
        "GATEKEEPER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEKEEPER_DASHBOARD_TOKEN": token,
    }
    serve = gatekeeper_process("serve", "--port", str(port), env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_serving(serve, f"{url}/healthz", timeout=60, what="gatekeeper serve did not come up")
        body = json.dumps(synchronize(fake, 7, fake.installation_id)).encode()
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        answer = httpx.post(
            f"{url}/webhook",
            content=body,
            headers={
                "X-GitHub-Event": "pull_request",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": f"sha256={digest}",
            },
        )
        assert answer.status_code == 202, answer.text
        run = wait_run(store, answer.json()["run"])
        assert run["state"] == "done", run["detail"]
        statuses = fake.statuses(REPO, sha)
        assert [s["state"] for s in statuses] == ["pending", "success"]
        assert statuses[-1]["target_url"] == f"{url}/runs/{run['id']}/report"
        assert httpx.get(statuses[-1]["target_url"]).status_code == 401  # not for everyone
        report = httpx.get(statuses[-1]["target_url"], headers={"Authorization": f"Bearer {token}"})
        assert report.status_code == 200 and "Gatekeeper: APPROVE" in report.text
        assert len(fake.comments(REPO, 7)) == 1 and len(fake.check_runs(REPO)) == 1
        serve.terminate()  # SIGTERM: drain and stop cleanly
        assert serve.wait(timeout=90) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=30)


def command(fake, number: int, body: str, login: str) -> dict[str, Any]:
    """A comment on pull request `number`, derived from the real issue_comment payload
    (upstream has no comment on a pull request)."""
    comment = copy.deepcopy(payload("issue_comment.created.with-installation"))
    comment["issue"]["number"] = number
    comment["issue"]["pull_request"] = {"url": f"{fake.url}/repos/{REPO}/pulls/{number}"}
    comment["comment"]["body"] = body
    comment["comment"]["user"]["login"] = login
    comment["comment"]["author_association"] = "MEMBER"
    comment["repository"]["full_name"] = REPO
    comment["installation"] = {"id": fake.installation_id}
    return comment


def test_ok_to_test_from_a_maintainer_runs_a_waiting_pull_request(fake_github, store, repo):
    fake = fake_github
    fake.add_repo(REPO, repo)
    fake.add_pull(REPO, 7, head="builder/add-name", user="outsider")
    fake.set_permission(REPO, "outsider", "read")
    fake.set_permission(REPO, "maintainer", "write")
    sha = fake.state.repos[REPO].pulls[7].head_sha
    opened = synchronize(fake, 7, fake.installation_id)
    opened["pull_request"]["author_association"] = "CONTRIBUTOR"
    comment = command(fake, 7, "/gatekeeper ok-to-test", "maintainer")
    with Running(make_service(fake, store)) as app:
        waiting = app.deliver("pull_request", opened)
        assert wait_run(store, waiting.json()["run"])["state"] == "waiting"
        assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending"]
        approved = app.deliver("issue_comment", comment)
        assert approved.status_code == 202, approved.text
        run = wait_run(store, approved.json()["run"])
    assert run["state"] == "done" and run["head_sha"] == sha
    assert fake.statuses(REPO, sha)[-1]["state"] == "success"
    # An outsider's command is not obeyed.
    comment["comment"]["user"]["login"] = "outsider"
    with Running(make_service(fake, store)) as app:
        ignored = app.deliver("issue_comment", comment)
        run = wait_run(store, ignored.json()["run"])
    assert run["state"] == "ignored" and "commands need write" in run["detail"]


def dispatch_repo(fake, repo: Path, timeout: float) -> str:
    """REPO with a policy in dispatch mode; returns the PR's head SHA."""
    extra = f"runner: actions\nactions: {{workflow: gatekeeper.yml, timeout: {timeout}}}\n"
    return serve_with_policy(fake, repo, extra)


def test_dispatch_mode_sends_the_workflow_and_accepts_its_report(fake_github, store, repo):
    fake = fake_github
    sha = dispatch_repo(fake, repo, timeout=600)
    with Running(make_service(fake, store)) as app:
        run = synchronized_run(app, fake, store)
        assert run["state"] == "dispatched"
        (dispatch,) = fake.state.repos[REPO].dispatches
        assert dispatch["workflow_id"] == "gatekeeper.yml" and dispatch["ref"] == "main"
        assert dispatch["inputs"]["head_sha"] == sha
        assert dispatch["inputs"]["run_id"] == str(run["id"])
        (pending,) = fake.statuses(REPO, sha)
        assert pending["state"] == "pending" and "/actions/runs/" in pending["target_url"]
        assert fake.check_runs(REPO) == []  # the service validated nothing itself
        # The workflow reports back with its own token, as the reusable workflow does.
        reporter = app.service.github.for_installation(fake.installation_id)
        reporter.create_status(REPO, sha, "success", "approve · risk low", "gatekeeper")
        app.service.watch_dispatched()
    assert store.run(run["id"])["state"] == "done"
    assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending", "success"]


def test_a_workflow_that_never_reports_back_ends_in_error(fake_github, store, repo):
    fake = fake_github
    sha = dispatch_repo(fake, repo, timeout=0.5)
    with Running(make_service(fake, store)) as app:
        run = synchronized_run(app, fake, store)
        time.sleep(0.6)
        app.service.watch_dispatched()
    assert store.run(run["id"])["state"] == "error"
    final = fake.statuses(REPO, sha)[-1]
    assert final["state"] == "error" and "did not report back" in final["description"]


def test_a_workflow_that_ends_without_reporting_ends_in_error(fake_github, store, repo):
    fake = fake_github
    sha = dispatch_repo(fake, repo, timeout=600)
    with Running(make_service(fake, store)) as app:
        run = synchronized_run(app, fake, store)
        fake.set_workflow_run(run["workflow_run_id"], conclusion="failure")
        app.service.watch_dispatched()
    final = fake.statuses(REPO, sha)[-1]
    assert final["state"] == "error" and "ended (failure) without reporting" in final["description"]
