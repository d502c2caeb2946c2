"""App authentication against the fake GitHub: JWTs, installation tokens, refresh, and secrets
that never show (reprs, exception messages, logs at DEBUG)."""

from __future__ import annotations

import logging
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.engine.job import Job
from bot.github.auth import (
    KEY_ENV,
    KEY_FILE_ENV,
    AppCredentials,
    CredentialsError,
    TokenCredentials,
    private_key_from_env,
)
from bot.github.client import GitHubClient, Pacing
from bot.github.http import GitHubError, Retries
from bot.github.publish import Publisher
from bot.judging.verdict import Criterion, Decision, Risk, Status, Verdict
from bot.reporting import render_markdown

REPO = "octo/demo"
FAST = Retries(attempts=2, backoff=0.01, backoff_max=0.05, jitter=0.01, timeout=10)
UNPACED = Pacing(seconds_between_requests=0, seconds_between_writes=0)


@pytest.fixture
def fake(fake_github, demo_git_repo):
    fake_github.add_repo(REPO, demo_git_repo)
    fake_github.add_pull(REPO, 1, head="builder/fix-orders")
    return fake_github


def app(fake, **kwargs) -> AppCredentials:
    return AppCredentials(
        fake.app_id, fake.app_private_key, api_url=fake.url, retries=FAST, **kwargs
    )


def other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def authorizations(fake, operation_id: str) -> list[str]:
    return [r.headers["authorization"] for r in fake.calls(operation_id)]


# -- the App JWT and installation tokens -------------------------------------------------


def test_app_jwt_claims_stay_within_githubs_ten_minutes(fake):
    token = app(fake).app_jwt()
    claims = jwt.decode(token, fake.settings.public_key_pem, algorithms=["RS256"])
    now = time.time()
    assert claims["iss"] == str(fake.app_id)
    assert now - 62 <= claims["iat"] <= now - 58  # back-dated for clock drift
    assert claims["exp"] - claims["iat"] == 600
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_installation_token_is_cached_per_installation(fake):
    credentials = app(fake)
    first = credentials.token_for(fake.installation_id)
    assert credentials.token_for(fake.installation_id) == first
    assert fake.tokens_issued == 1
    fake.add_installation(888, "other")
    assert credentials.token_for(888) != first
    assert fake.tokens_issued == 2


def test_concurrent_runs_of_one_installation_mint_one_token(fake):
    credentials = app(fake)
    fake.delay("apps/create-installation-access-token", 0.2, times=1)
    tokens: list[str] = []
    threads = [
        threading.Thread(target=lambda: tokens.append(credentials.token_for(fake.installation_id)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert fake.tokens_issued == 1


def test_a_token_within_the_refresh_margin_is_replaced(fake):
    fake.token_lifetime = 200  # under the default 5-minute margin: never worth keeping
    credentials = app(fake)
    assert credentials.token_for(fake.installation_id) != credentials.token_for(
        fake.installation_id
    )
    assert fake.tokens_issued == 2


def test_the_client_refreshes_short_lived_tokens_before_they_expire(fake):
    fake.token_lifetime = 3
    credentials = app(fake, refresh_margin=1.5)
    client = GitHubClient(fake.url, credentials, retries=FAST, pacing=UNPACED)
    client = client.for_installation(fake.installation_id)

    client.pull_request(REPO, 1)
    client.pull_request(REPO, 1)
    time.sleep(1.7)  # the token now expires within the margin
    client.pull_request(REPO, 1)

    assert fake.tokens_issued == 2
    first, again, refreshed = authorizations(fake, "pulls/get")
    assert first == again != refreshed
    assert all(r.status == 200 for r in fake.calls("pulls/get"))


def test_a_token_github_refuses_is_replaced_once(fake):
    client = GitHubClient(fake.url, app(fake), retries=FAST, pacing=UNPACED)
    client = client.for_installation(fake.installation_id)
    client.pull_request(REPO, 1)
    fake.expire_tokens()  # revoked early, as on a reinstall: the cache still trusts it

    assert client.pull_request(REPO, 1)["number"] == 1

    assert [r.status for r in fake.calls("pulls/get")] == [200, 401, 200]
    assert fake.tokens_issued == 2


def test_a_refused_personal_token_is_an_error(fake):
    token = fake.issue_token()
    client = GitHubClient(fake.url, TokenCredentials(token), retries=FAST, pacing=UNPACED)
    fake.expire_tokens()
    with pytest.raises(GitHubError) as caught:
        client.pull_request(REPO, 1)
    assert (caught.value.status, caught.value.message) == (401, "Bad credentials")
    assert len(fake.calls("pulls/get")) == 1


def test_an_app_needs_an_installation(fake):
    with pytest.raises(CredentialsError, match="installation"):
        app(fake).token_for(None)


def test_an_unknown_installation_is_githubs_404(fake):
    with pytest.raises(GitHubError) as caught:
        app(fake).token_for(999)
    assert caught.value.status == 404


def test_a_key_github_does_not_know_is_refused_without_leaking_it(fake):
    key = other_key()
    credentials = AppCredentials(fake.app_id, key, api_url=fake.url, retries=FAST)
    with pytest.raises(GitHubError) as caught:
        credentials.token_for(fake.installation_id)
    assert caught.value.status == 401
    assert caught.value.message == "A JSON web token could not be decoded"
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    (sent,) = authorizations(fake, "apps/create-installation-access-token")
    assert sent.removeprefix("Bearer ") not in str(caught.value)


def test_the_token_exchange_is_retried_on_5xx(fake):
    fake.fail_next("apps/create-installation-access-token", 502)
    assert app(fake).token_for(fake.installation_id).startswith("ghs_")
    assert fake.tokens_issued == 1


def test_a_personal_token_works_without_an_installation(fake):
    token = fake.issue_token()
    client = GitHubClient(fake.url, TokenCredentials(token), retries=FAST, pacing=UNPACED)
    assert client.pull_request(REPO, 1)["number"] == 1
    assert authorizations(fake, "pulls/get") == [f"token {token}"]
    assert client.token_for(None) == token


# -- the private key ---------------------------------------------------------------------


def test_private_key_from_env_text_file_and_escaped_newlines(fake, tmp_path):
    key = fake.app_private_key
    assert private_key_from_env({KEY_ENV: key}) == key.strip()
    assert private_key_from_env({KEY_ENV: key.strip().replace("\n", "\\n")}) == key.strip()
    path = tmp_path / "app.pem"
    path.write_text(key)
    assert private_key_from_env({KEY_FILE_ENV: str(path)}) == key
    credentials = AppCredentials.from_env(
        fake.app_id, env={KEY_FILE_ENV: str(path)}, api_url=fake.url, retries=FAST
    )
    assert credentials.token_for(fake.installation_id).startswith("ghs_")


def test_private_key_errors_say_what_to_set(fake, tmp_path):
    with pytest.raises(CredentialsError, match=f"{KEY_ENV}.*{KEY_FILE_ENV}"):
        private_key_from_env({})
    with pytest.raises(CredentialsError, match="both"):
        private_key_from_env({KEY_ENV: "x", KEY_FILE_ENV: "y"})
    missing = tmp_path / "nope.pem"
    with pytest.raises(CredentialsError, match=f"{KEY_FILE_ENV}: {missing} does not exist"):
        private_key_from_env({KEY_FILE_ENV: str(missing)})


@pytest.mark.parametrize(
    "bad",
    [
        "not a key at all",
        "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWJ1dC1icm9rZW4=\n"
        "-----END RSA PRIVATE KEY-----\n",
    ],
)
def test_an_unusable_key_fails_at_start_up_without_quoting_it(bad):
    with pytest.raises(CredentialsError) as caught:
        AppCredentials(1, bad)
    assert "c2VjcmV0" not in str(caught.value) and "not a key" not in str(caught.value)


# -- secrets never show ------------------------------------------------------------------


def test_reprs_mask_secrets(fake):
    credentials = app(fake)
    token = credentials.token_for(fake.installation_id)
    personal = TokenCredentials("ghp_secret_value")
    client = GitHubClient(fake.url, credentials).for_installation(fake.installation_id)
    for text in (repr(credentials), str(credentials), repr(personal), repr(client)):
        assert "PRIVATE KEY" not in text
        assert token not in text
        assert "ghp_secret_value" not in text
    assert "***" in repr(credentials) and "***" in repr(personal)


def test_no_secret_reaches_the_logs_or_errors_of_a_whole_run(fake, caplog):
    caplog.set_level(logging.DEBUG)  # PyGithub, urllib3 and ours, at their chattiest
    caplog.set_level(logging.DEBUG, logger="github")  # PyGithub sets its own level to INFO
    credentials = app(fake)
    client = GitHubClient(fake.url, credentials, retries=FAST, pacing=UNPACED)
    client = client.for_installation(fake.installation_id)
    sha = fake.state.repos[REPO].pulls[1].head_sha
    publisher = Publisher(client, REPO, review=True, labels=True)
    job = Job(repository=REPO, base_ref="main", head_ref="b", base_sha="a" * 40, head_sha=sha)
    verdict = Verdict(
        decision=Decision.approve,
        risk=Risk.low,
        summary="fine",
        job=job.model_dump(),
        criteria=[Criterion(id="a", title="a", status=Status.passed)],
    )
    publisher.pending(sha, "validating")
    check_run_id = publisher.start_check(sha)
    publisher.finish(sha, verdict, render_markdown(verdict), check_run_id, pr_number=1)
    fake.fail_next("pulls/get", 401, times=2, message="Bad credentials")
    with pytest.raises(GitHubError) as caught:  # refused again with a renewed token
        client.pull_request(REPO, 1)
    assert fake.tokens_issued == 2
    fake.fail_next("pulls/get", 502, times=5)
    with pytest.raises(GitHubError) as failed:
        client.pull_request(REPO, 1)

    loggers = {record.name for record in caplog.records}
    assert {"github.Requester", "urllib3.connectionpool"} <= loggers, "nothing to prove"
    secrets = list(fake.state.tokens)  # every installation token minted
    secrets += [
        a.removeprefix("Bearer ")
        for a in authorizations(fake, "apps/create-installation-access-token")
    ]
    key_lines = [line for line in fake.app_private_key.splitlines() if "PRIVATE KEY" not in line]
    everything = caplog.text + str(caught.value) + repr(caught.value) + str(failed.value)
    for secret in secrets + key_lines:
        assert secret not in everything
