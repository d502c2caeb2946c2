"""GitHub API call and rate-limit metrics, against the fake GitHub over real HTTP.

The Prometheus registry is process-wide, so each test compares readings before and after.
"""

from __future__ import annotations

import socket
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from bot.github.auth import AppCredentials, TokenCredentials
from bot.github.client import GitHubClient
from bot.github.http import GitHubError, Retries
from tests.github.test_client import FAST, HEAD, REPO, UNPACED, head_sha, make_client

CALLS = "gatekeeper_github_api_calls_total"
REMAINING = "gatekeeper_github_rate_limit_remaining"


@pytest.fixture
def fake(fake_github, demo_git_repo):
    fake_github.add_repo(REPO, demo_git_repo)
    fake_github.add_pull(REPO, 1, head=HEAD)
    return fake_github


def calls() -> Counter[tuple[str, str]]:
    """The counter's value for every (method, status) it has seen so far."""
    return Counter(
        {
            (sample.labels["method"], sample.labels["status"]): sample.value
            for family in REGISTRY.collect()
            for sample in family.samples
            if sample.name == CALLS
        }
    )


def remaining(resource: str = "core") -> float | None:
    return REGISTRY.get_sample_value(REMAINING, {"resource": resource})


def test_each_request_sent_is_counted_once(fake):
    client = make_client(fake)
    before = calls()
    for _ in range(3):
        client.pull_request(REPO, 1)
    # The installation token's exchange, then the three reads: exactly what the fake received.
    assert calls() - before == Counter({("POST", "201"): 1, ("GET", "200"): 3})
    assert len(fake.requests) == 4


def test_a_retried_502_counts_both_attempts(fake):
    client = make_client(fake)
    client.pull_request(REPO, 1)  # the token exchange, out of the way
    fake.fail_next("pulls/get", 502)
    before = calls()
    client.pull_request(REPO, 1)
    assert calls() - before == Counter({("GET", "502"): 1, ("GET", "200"): 1})


def test_the_last_answer_of_exhausted_retries_is_counted_once(fake):
    client = make_client(fake)
    client.pull_request(REPO, 1)
    fake.fail_next("pulls/get", 500, times=10)
    before = calls()
    with pytest.raises(GitHubError):
        client.pull_request(REPO, 1)
    assert calls() - before == Counter({("GET", "500"): 1 + FAST.attempts})


def test_a_403_refused_inside_the_retry_is_counted(fake):
    # GithubRetry raises for a 403 that is no rate limit: requests never sees that answer.
    client = make_client(fake)
    client.pull_request(REPO, 1)
    fake.fail_next("repos/create-commit-status", 403, message="Resource not accessible")
    before = calls()
    with pytest.raises(GitHubError):
        client.create_status(REPO, head_sha(fake), "pending", "validating", "gatekeeper")
    assert calls() - before == Counter({("POST", "403"): 1})


def test_attempts_without_an_answer_count_as_errors():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = GitHubClient(dead, TokenCredentials("ghp_unused"), retries=FAST, pacing=UNPACED)
    before = calls()
    with pytest.raises(GitHubError):
        client.pull_request(REPO, 1)
    assert calls() - before == Counter({("GET", "error"): 1 + FAST.attempts})


def test_the_remaining_gauge_follows_each_answer(fake):
    credentials = AppCredentials(fake.app_id, fake.app_private_key, api_url=fake.url)
    credentials.installation_token(fake.installation_id)
    assert remaining() == 5000 - fake.state.rate_used["app"]

    client = make_client(fake, retries=Retries(attempts=2, backoff=0.01, max_wait=0.5))
    fake.set_rate_remaining(100)
    client.pull_request(REPO, 1)
    assert remaining() == 99  # this read used one

    fake.set_rate_remaining(10)
    fake.fail_next("pulls/get", 404)  # an error answer carries it too (and costs nothing)
    with pytest.raises(GitHubError):
        client.pull_request(REPO, 1)
    assert remaining() == 10

    fake.rate_limit_next("pulls/get", retry_after=30, secondary=False)
    with pytest.raises(GitHubError):
        client.pull_request(REPO, 1)
    assert remaining() == 0
