"""The client and the publisher against the fake GitHub: real HTTP, GitHub's OpenAPI description.

Every test ends with the fake's violations empty (the `fake_github` fixture checks it).
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from bot.engine.job import Job
from bot.github.auth import AppCredentials, TokenCredentials
from bot.github.client import GitHubClient, Pacing, WriteBudget
from bot.github.http import GitHubError, Retries
from bot.github.limits import REPORT_MARKER
from bot.github.publish import REVIEW_MARKER, Publisher
from bot.judging.verdict import Criterion, Decision, Finding, Risk, Status, Verdict
from bot.reporting import render_markdown

REPO = "octo/demo"
HEAD = "builder/fix-orders"  # the demo_git_repo fixture's builder branch
REPORT_URL = "https://gatekeeper.example/runs/1/report"
FAST = Retries(
    attempts=3,
    backoff=0.01,
    backoff_max=0.05,
    jitter=0.01,
    secondary_rate_wait=0.05,
    max_wait=5,
    timeout=10,
)
UNPACED = Pacing(seconds_between_requests=0, seconds_between_writes=0)


@pytest.fixture
def fake(fake_github, demo_git_repo):
    fake_github.add_repo(REPO, demo_git_repo)
    fake_github.add_pull(REPO, 1, head=HEAD)
    return fake_github


def make_client(fake, *, retries: Retries = FAST, pacing: Pacing = UNPACED) -> GitHubClient:
    credentials = AppCredentials(
        fake.app_id, fake.app_private_key, api_url=fake.url, retries=retries
    )
    root = GitHubClient(fake.url, credentials, retries=retries, pacing=pacing)
    return root.for_installation(fake.installation_id)


@pytest.fixture
def client(fake) -> GitHubClient:
    return make_client(fake)


def head_sha(fake) -> str:
    return fake.state.repos[REPO].pulls[1].head_sha


def verdict(decision: Decision, risk: Risk | None, findings: int = 0) -> Verdict:
    job = Job(repository=REPO, base_ref="main", head_ref=HEAD, base_sha="a" * 40, head_sha="b" * 40)
    status = Status.passed if decision in (Decision.approve, Decision.review) else Status.failed
    return Verdict(
        decision=decision,
        risk=risk,
        summary=f"{decision.value} summary",
        job=job.model_dump(),
        criteria=[Criterion(id="lifecycle/create", title="create", status=status)],
        findings=[
            Finding(
                rule="require-concurrent-index-creation",
                level=Risk.medium,
                message=f"finding {i}",
                file="db/002_orders_total.sql",
                line=1,
                safe_alternative="CREATE INDEX CONCURRENTLY",
            )
            for i in range(findings)
        ],
    )


# -- the whole publishing flow -----------------------------------------------------------


def test_full_publish_flow_then_a_second_run_edits_in_place(fake, client):
    sha = head_sha(fake)
    publisher = Publisher(client, REPO, report_url=REPORT_URL, review=True, labels=True)

    publisher.pending(sha, "validating: merge, migrate, checks")
    check_run_id = publisher.start_check(sha)
    assert fake.check_run(check_run_id).data["status"] == "in_progress"

    first = verdict(Decision.reject, Risk.high, findings=120)
    published = publisher.finish(sha, first, render_markdown(first), check_run_id, pr_number=1)
    assert published.problems == []

    assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending", "failure"]
    assert fake.statuses(REPO, sha)[-1]["description"].startswith("reject · risk high · failed")
    updates = fake.bodies("checks/update")
    assert [len(b["output"].get("annotations", [])) for b in updates] == [50, 50, 20]
    run = fake.check_run(check_run_id)
    assert run.data["conclusion"] == "failure"
    assert len(run.annotations) == 120
    assert run.data["details_url"] == REPORT_URL
    (comment,) = fake.comments(REPO, 1)
    assert comment["body"].startswith(REPORT_MARKER)
    assert comment["id"] == published.comment_id
    assert fake.labels(REPO, 1) == ["risk:high"]
    (review,) = fake.reviews(REPO, 1)
    assert review["state"] == "CHANGES_REQUESTED"
    assert review["commit_id"] == sha
    assert review["body"].startswith(REVIEW_MARKER)

    second = verdict(Decision.approve, Risk.low)
    publisher.pending(sha, "validating again")
    again = publisher.finish(sha, second, render_markdown(second), pr_number=1)

    assert fake.statuses(REPO, sha)[-1]["state"] == "success"
    assert fake.check_run(again.check_run_id).data["conclusion"] == "success"
    (edited,) = fake.comments(REPO, 1)
    assert edited["id"] == comment["id"]
    assert "APPROVE" in edited["body"]
    assert len(fake.calls("issues/create-comment")) == 1
    assert len(fake.calls("issues/update-comment")) == 1
    assert fake.labels(REPO, 1) == ["risk:low"]
    assert [r["state"] for r in fake.reviews(REPO, 1)] == ["CHANGES_REQUESTED", "APPROVED"]

    # A third identical run writes no new comment, label or review: nothing changed.
    publisher.finish(sha, second, render_markdown(second), pr_number=1)
    assert len(fake.calls("issues/update-comment")) == 1
    assert len(fake.reviews(REPO, 1)) == 2
    assert len(fake.calls("issues/add-labels")) == 2


def test_reports_without_review_or_labels_touch_neither(fake, client):
    sha = head_sha(fake)
    ok = verdict(Decision.approve, Risk.low)
    Publisher(client, REPO).finish(sha, ok, render_markdown(ok), pr_number=1)
    assert fake.reviews(REPO, 1) == []
    assert fake.labels(REPO, 1) == []
    assert fake.calls("issues/create-label") == []


def test_review_decision_blocks_without_reading_as_a_reject(fake, client):
    sha = head_sha(fake)
    needs_review = verdict(Decision.review, Risk.high)
    Publisher(client, REPO).finish(sha, needs_review, render_markdown(needs_review))
    (status,) = fake.statuses(REPO, sha)
    assert status["state"] == "failure"
    assert status["description"].startswith("review needed · risk high")
    (run,) = fake.check_runs(REPO)
    assert run.data["conclusion"] == "action_required"


def test_an_error_after_an_approval_dismisses_it(fake, client):
    sha = head_sha(fake)
    publisher = Publisher(client, REPO, review=True, labels=True)
    ok = verdict(Decision.approve, Risk.low)
    publisher.finish(sha, ok, render_markdown(ok), pr_number=1)
    assert [r["state"] for r in fake.reviews(REPO, 1)] == ["APPROVED"]

    published = publisher.error(sha, "PostgreSQL did not start", pr_number=1)

    assert [r["state"] for r in fake.reviews(REPO, 1)] == ["DISMISSED"]
    assert fake.labels(REPO, 1) == []
    status = fake.statuses(REPO, sha)[-1]
    assert (status["state"], status["description"]) == ("error", "error · PostgreSQL did not start")
    run = fake.check_run(published.check_run_id)
    assert run.data["conclusion"] == "failure"
    assert "PostgreSQL did not start" in run.data["output"]["summary"]


def test_error_completes_the_check_run_it_started(fake, client):
    sha = head_sha(fake)
    publisher = Publisher(client, REPO)
    check_run_id = publisher.start_check(sha)
    published = publisher.error(sha, "x" * 10_000)
    assert published.check_run_id == check_run_id
    assert len(fake.check_runs(REPO)) == 1
    assert fake.check_run(check_run_id).data["conclusion"] == "failure"
    assert len(fake.statuses(REPO, sha)[-1]["description"]) <= 140


def test_error_tries_the_check_run_even_when_the_status_fails(fake, client):
    sha = head_sha(fake)
    publisher = Publisher(client, REPO)
    check_run_id = publisher.start_check(sha)
    fake.fail_next("repos/create-commit-status", 500, times=10)
    with pytest.raises(GitHubError) as caught:
        publisher.error(sha, "gate crashed")
    assert caught.value.status == 500
    assert fake.check_run(check_run_id).data["conclusion"] == "failure"


def test_superseded_is_final_and_never_an_approval(fake, client):
    sha = head_sha(fake)
    publisher = Publisher(client, REPO)
    publisher.pending(sha, "validating")
    check_run_id = publisher.start_check(sha)
    publisher.superseded(sha, "abc1234def5678")
    status = fake.statuses(REPO, sha)[-1]
    assert (status["state"], status["description"]) == ("error", "superseded by abc1234")
    assert fake.check_run(check_run_id).data["conclusion"] == "cancelled"


def test_the_sticky_comment_is_found_on_a_later_page(fake):
    unlimited = Pacing(writes=((1000, 60.0),), seconds_between_requests=0, seconds_between_writes=0)
    client = make_client(fake, pacing=unlimited)
    for index in range(100):  # one full page of other comments first
        client.create_comment(REPO, 1, f"chatter {index}")
    sha = head_sha(fake)
    publisher = Publisher(client, REPO)
    ok = verdict(Decision.approve, Risk.low)

    first = publisher.finish(sha, ok, render_markdown(ok), pr_number=1)
    second = publisher.finish(sha, ok, render_markdown(ok) + "\nchanged\n", pr_number=1)

    assert second.comment_id == first.comment_id
    pages = [r.query.get("page") for r in fake.calls("issues/list-comments")]
    assert pages == [None, None, "2"]  # 100 comments fit page 1; then the sticky one is on 2
    assert len(fake.calls("issues/create-comment")) == 101
    assert len(fake.calls("issues/update-comment")) == 1


# -- reads -------------------------------------------------------------------------------


def test_read_file_decodes_and_a_missing_file_is_none(fake, client):
    assert client.read_file(REPO, "main", "README.md") == "# demo\n\nA tiny service.\n"
    assert client.read_file(REPO, HEAD, "db/002_orders_total.sql").startswith("ALTER TABLE")
    assert client.read_file(REPO, "main", ".github/gatekeeper.yml") is None


def test_read_file_refuses_to_guess_when_the_repository_or_ref_is_missing(fake, client):
    with pytest.raises(GitHubError) as caught:
        client.read_file("octo/elsewhere", "main", "README.md")
    assert caught.value.status == 404
    with pytest.raises(GitHubError) as caught:
        client.read_file(REPO, "no-such-branch", "README.md")
    assert caught.value.status == 404


def test_read_file_of_a_directory_is_an_error(fake, client):
    with pytest.raises(ValueError, match="is a dir"):
        client.read_file(REPO, "main", "db")


def test_pull_request_and_permission(fake, client):
    fake.set_permission(REPO, "maint", "maintain")
    pull = client.pull_request(REPO, 1)
    assert pull["head"]["ref"] == HEAD
    assert pull["head"]["sha"] == head_sha(fake)
    assert pull["base"]["ref"] == "main"
    assert pull["head"]["repo"]["full_name"] == REPO
    assert pull["user"]["login"] == "builder-bot"
    assert (pull["state"], pull["draft"]) == ("open", False)
    assert "author_association" in pull
    assert client.permission(REPO, "maint") == "write"
    assert client.permission(REPO, "stranger") == "read"


# -- retries, rate limits, errors --------------------------------------------------------


def test_502_is_retried_then_succeeds(fake, client):
    fake.fail_next("pulls/get", 502, times=2)
    assert client.pull_request(REPO, 1)["number"] == 1
    assert [r.status for r in fake.calls("pulls/get")] == [502, 502, 200]


def test_writes_are_retried_too(fake, client):
    sha = head_sha(fake)
    check_run_id = Publisher(client, REPO).start_check(sha)
    fake.fail_next("checks/update", 503)
    ok = verdict(Decision.approve, Risk.low)
    Publisher(client, REPO).finish(sha, ok, render_markdown(ok), check_run_id)
    assert [r.status for r in fake.calls("checks/update")] == [503, 200]


def test_persistent_5xx_gives_up_with_githubs_message(fake, client):
    fake.fail_next("pulls/get", 500, times=10, message="Something broke")
    with pytest.raises(GitHubError) as caught:
        client.pull_request(REPO, 1)
    assert (caught.value.status, caught.value.message) == (500, "Something broke")
    assert len(fake.calls("pulls/get")) == 1 + FAST.attempts


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_waits_for_retry_after(fake, client, status):
    fake.rate_limit_next("repos/create-commit-status", retry_after=1, status=status)
    started = time.monotonic()
    Publisher(client, REPO).pending(head_sha(fake), "validating")
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in fake.calls("repos/create-commit-status")] == [status, 201]


def test_secondary_rate_limit_429_without_retry_after_waits_the_minimum(fake):
    retries = Retries(attempts=2, backoff=0.01, jitter=0, secondary_rate_wait=0.5, timeout=10)
    client = make_client(fake, retries=retries)
    message = "You have exceeded a secondary rate limit. Please wait a few minutes."
    fake.fail_next("pulls/get", 429, message=message)
    started = time.monotonic()
    client.pull_request(REPO, 1)
    assert time.monotonic() - started >= 0.5
    assert [r.status for r in fake.calls("pulls/get")] == [429, 200]


def test_primary_rate_limit_waits_for_the_reset_within_max_wait(fake):
    client = make_client(fake, retries=Retries(attempts=2, backoff=0.01, max_wait=0.5))
    fake.rate_limit_next("pulls/get", retry_after=30, secondary=False)
    with pytest.raises(GitHubError) as caught:
        client.pull_request(REPO, 1)
    assert caught.value.status == 403
    assert caught.value.message.startswith("API rate limit exceeded")
    assert len(fake.calls("pulls/get")) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_other_4xx_are_not_retried_and_carry_githubs_message(fake, client, status):
    fake.fail_next("repos/create-commit-status", status, message="Resource not accessible")
    with pytest.raises(GitHubError) as caught:
        Publisher(client, REPO).pending(head_sha(fake), "validating")
    assert (caught.value.status, caught.value.message) == (status, "Resource not accessible")
    assert len(fake.calls("repos/create-commit-status")) == 1


def test_a_real_422_is_surfaced_with_githubs_message(fake, client):
    with pytest.raises(GitHubError) as caught:
        Publisher(client, REPO).pending("0" * 40, "validating")
    assert caught.value.status == 422
    assert "No commit found for SHA" in caught.value.message
    assert len(fake.calls("repos/create-commit-status")) == 1


def test_an_unreachable_github_is_retried_then_reported(fake):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = GitHubClient(dead, TokenCredentials("ghp_unused"), retries=FAST, pacing=UNPACED)
    with pytest.raises(GitHubError) as caught:
        client.pull_request(REPO, 1)
    assert caught.value.status is None
    assert "ghp_unused" not in str(caught.value)


# -- the write budget --------------------------------------------------------------------


def test_writes_beyond_the_budget_are_delayed_not_dropped(fake):
    pacing = Pacing(writes=((3, 0.6),), seconds_between_requests=0, seconds_between_writes=0)
    client = make_client(fake, pacing=pacing)
    publisher = Publisher(client, REPO)
    sha = head_sha(fake)
    started = time.monotonic()
    for index in range(7):
        publisher.pending(sha, f"step {index}")
    elapsed = time.monotonic() - started
    assert len(fake.statuses(REPO, sha)) == 7
    assert elapsed >= 1.2  # writes 4-6 wait one window, write 7 a second one


def test_the_budget_is_shared_by_an_installations_clients(fake):
    pacing = Pacing(writes=((2, 0.5),), seconds_between_requests=0, seconds_between_writes=0)
    root = make_client(fake, pacing=pacing)
    other = root.for_installation(fake.installation_id)
    sha = head_sha(fake)
    started = time.monotonic()
    Publisher(root, REPO).pending(sha, "one")
    Publisher(other, REPO).pending(sha, "two")
    Publisher(root.for_installation(fake.installation_id), REPO).pending(sha, "three")
    assert time.monotonic() - started >= 0.5
    assert len(fake.statuses(REPO, sha)) == 3


def test_write_budget_rejects_empty_windows():
    with pytest.raises(ValueError):
        WriteBudget([])
    with pytest.raises(ValueError):
        WriteBudget([(0, 60.0)])


# -- the App's webhook deliveries (service support) --------------------------------------


def test_failed_deliveries_skip_the_redelivered_and_the_old(fake, client):
    old = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fake.add_delivery(event="pull_request", status_code=502, delivered_at=old)
    failed = fake.add_delivery(event="pull_request", status_code=500)
    fixed = fake.add_delivery(event="push", status_code=504, guid="g-fixed")
    fake.add_delivery(event="push", status_code=200, guid="g-fixed", redelivery=True)
    fake.add_delivery(event="push", status_code=200)

    found = client.failed_deliveries(datetime.now(UTC) - timedelta(hours=24))

    assert [d["id"] for d in found] == [failed.id]
    assert fixed.id not in [d["id"] for d in found]
    client.redeliver(failed.id)
    assert fake.redelivery_attempts == [failed.id]
