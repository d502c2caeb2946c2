"""Who may read the run history, over real HTTP: sign-in with GitHub through the App's OAuth
(against the fake GitHub, whose every API request is checked against GitHub's description),
the static token, the session cookie, and the history closed when neither is configured.

The app is the service's own on loopback over a real PostgreSQL; its runs are written to the
store as the service writes them. alice may read octo/inventory only; octo/billing is in the
same installation, other/tool in another one.
"""

from __future__ import annotations

import stat
import time
import uuid
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from bot.app.service import Service
from bot.app.session import SECRET_FILE, SESSION_COOKIE, STATE_COOKIE, Seal
from bot.app.settings import Settings
from bot.app.store import Store
from bot.github.auth import TokenCredentials
from bot.github.client import GitHubClient
from tests.github.fake import FakeGitHub

from .test_service import Running

SECRET = "login-webhook-secret"
TOKEN = "dashboard-token-0123456789abcdef"
READABLE = "octo/inventory"
HIDDEN = ("octo/billing", "other/tool")


def add_run(store: Store, repo: str, pr: int = 1, report: str = "# Report\n") -> int:
    sha = uuid.uuid4().hex + "0" * 8
    target = {"repository": repo, "pr_number": pr, "installation_id": 1, "head_sha": sha}
    run_id = store.accept(str(uuid.uuid4()), "pull_request", "synchronize", target, sha)
    assert run_id is not None
    store.update(run_id, state="error", detail="git clone failed", report=report)
    return run_id


@pytest.fixture
def github(fake_github: FakeGitHub, repo: Path) -> FakeGitHub:
    """The fake GitHub with alice signed in; she may read READABLE and nothing else."""
    fake_github.add_repo(READABLE, repo)
    fake_github.add_repo("octo/billing", repo)
    fake_github.add_installation(888, "other")
    fake_github.add_repo("other/tool", repo, installation_id=888)
    fake_github.set_permission(READABLE, "alice", "read")
    fake_github.set_permission("other/tool", "alice", "none")
    fake_github.sign_in_as("alice")
    return fake_github


@pytest.fixture
def runs(store: Store) -> dict[str, int]:
    return {repo: add_run(store, repo) for repo in (READABLE, *HIDDEN)}


class App(Running):
    """The service's app with sign-in on `fake`; its own GitHub client is never called."""

    def __init__(self, store: Store, fake: FakeGitHub | None, **settings: Any):
        oauth = (
            {
                "github_api_url": fake.url,
                "oauth_client_id": fake.oauth_client_id,
                "oauth_client_secret": fake.oauth_client_secret,
            }
            if fake is not None
            else {}
        )
        config = Settings(
            webhook_secret=SECRET,
            database_url=store.database_url,
            log_json=False,
            **{"session_secret": "s" * 32, **oauth, **settings},
        )
        github = GitHubClient("http://127.0.0.1:9", TokenCredentials("unused"))
        super().__init__(Service(config, store, github), worker=False)
        self.fake = fake

    def __enter__(self) -> App:
        super().__enter__()
        if self.fake is not None:
            self.fake.set_oauth_callback(f"{self.url}/login/callback")
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)


@pytest.fixture
def app(store: Store, github: FakeGitHub) -> Iterator[App]:
    with App(store, github, dashboard_token=TOKEN) as running:
        yield running


def sign_in(app: App, browser: httpx.Client, start: str = "/") -> httpx.Response:
    """What a browser does, one redirect at a time: the page sends it to /login, the button
    to GitHub, GitHub back with a code; returns the callback's answer."""
    page = browser.get(start)
    assert page.status_code == 303, page.text
    assert page.headers["location"].startswith("/login?next=")
    form = browser.get(page.headers["location"])
    assert form.status_code == 200 and "Sign in with GitHub" in form.text
    button = browser.get("/login/github", params={"next": start})
    assert button.status_code == 302
    authorize = urlsplit(button.headers["location"])
    query = dict(parse_qsl(authorize.query))
    assert f"{authorize.scheme}://{authorize.netloc}" == app.fake.url
    assert authorize.path == "/login/oauth/authorize"
    assert query["client_id"] == app.fake.oauth_client_id
    assert query["redirect_uri"] == f"{app.url}/login/callback" and query["state"]
    back = httpx.get(button.headers["location"], timeout=10)
    assert back.status_code == 302
    callback = urlsplit(back.headers["location"])
    return browser.get(f"{callback.path}?{callback.query}")


def set_cookie(response: httpx.Response, name: str) -> SimpleCookie:
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        if name in cookie:
            return cookie
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


# -- signed in ---------------------------------------------------------------------------------


def test_a_signed_in_person_sees_only_the_runs_of_repositories_they_can_read(app, runs):
    with app.client() as browser:
        done = sign_in(app, browser, start=f"/runs/{runs[READABLE]}/page")
        assert done.status_code == 303
        assert done.headers["location"] == f"/runs/{runs[READABLE]}/page"  # back where it began
        page = browser.get(done.headers["location"])
        assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text

        listed = browser.get("/runs").json()
        assert [item["repository"] for item in listed["items"]] == [READABLE]
        assert listed["total"] == 1
        assert browser.get(f"/runs/{runs[READABLE]}").json()["repository"] == READABLE
        assert browser.get(f"/runs/{runs[READABLE]}/report").text == "# Report\n"
        assert browser.get("/stats.json").json()["runs"] == 1
        index = browser.get("/").text
        assert f'href="/runs/{runs[READABLE]}/page"' in index
        for repo in HIDDEN:
            # Someone else's run answers like one that does not exist.
            assert browser.get(f"/runs/{runs[repo]}").status_code == 404
            assert browser.get(f"/runs/{runs[repo]}/report").status_code == 404
            assert browser.get(f"/runs/{runs[repo]}/page").status_code == 404
            assert f'href="/runs/{runs[repo]}/page"' not in index
            assert browser.get("/runs", params={"repo": repo}).json()["total"] == 0
            assert browser.get("/stats.json", params={"repo": repo}).json()["runs"] == 0
    calls = [r.operation_id for r in app.fake.requests]
    assert "apps/list-installations-for-authenticated-user" in calls
    assert "apps/list-installation-repos-for-authenticated-user" in calls


def test_the_session_cookie(store, github):
    with App(store, github, session_hours=2) as app, app.client() as browser:
        done = sign_in(app, browser)
        cookie = set_cookie(done, SESSION_COOKIE)[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "lax" and cookie["path"] == "/"
        assert int(cookie["max-age"]) == 2 * 3600  # the shorter of the setting and the token
        assert not cookie["secure"]  # the public URL is http here
        assert "alice" not in cookie.value and "ghu_" not in cookie.value  # sealed, not just signed
        state = set_cookie(done, STATE_COOKIE)[STATE_COOKIE]
        assert state["max-age"] == "0"  # the sign-in's state is used up


def test_secure_cookies_when_the_public_url_is_https(store, github):
    with App(store, github, public_url="https://gatekeeper.example") as app:
        github.set_oauth_callback("https://gatekeeper.example/login/callback")
        with app.client() as browser:
            button = browser.get("/login/github")
            state = set_cookie(button, STATE_COOKIE)[STATE_COOKIE]
            assert state["secure"] and state["path"] == "/login"
            query = dict(parse_qsl(urlsplit(button.headers["location"]).query))
            assert query["redirect_uri"] == "https://gatekeeper.example/login/callback"
            back = httpx.get(button.headers["location"], timeout=10)
            code = dict(parse_qsl(urlsplit(back.headers["location"]).query))
            # The TLS proxy would pass the request on; here it is sent to the app directly.
            done = browser.get(
                "/login/callback",
                params=code,
                headers={"Cookie": f"{STATE_COOKIE}={state.value}"},
            )
            assert done.status_code == 303
            assert set_cookie(done, SESSION_COOKIE)[SESSION_COOKIE]["secure"]


def test_the_repository_list_is_asked_again_after_a_few_minutes(store, github, runs):
    listings = "apps/list-installations-for-authenticated-user"
    with App(store, github, session_refresh=3.0) as app, app.client() as browser:
        sign_in(app, browser)
        asked = len(github.calls(listings))
        for _ in range(3):  # within the refresh window: from the cache
            assert browser.get("/runs").json()["total"] == 1
        assert len(github.calls(listings)) == asked
        github.set_permission(READABLE, "alice", "none")  # she loses access on GitHub
        assert browser.get("/runs").json()["total"] == 1
        time.sleep(3.2)
        assert browser.get("/runs").json()["total"] == 0
        assert len(github.calls(listings)) > asked


def test_a_revoked_token_ends_the_session(store, github, runs):
    with App(store, github, session_refresh=0.5) as app, app.client() as browser:
        sign_in(app, browser)
        github.revoke_user_tokens("alice")
        time.sleep(0.6)
        answer = browser.get("/runs")
        assert answer.status_code == 401
        assert set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]["max-age"] == "0"
        assert browser.get("/").headers["location"] == "/login?next=%2F"


def test_github_down_when_the_list_is_due_is_503_not_everything(store, github, runs):
    with App(store, github, session_refresh=0.5) as app, app.client() as browser:
        sign_in(app, browser)
        time.sleep(0.6)
        github.fail_next("apps/list-installations-for-authenticated-user", 502)
        down = browser.get("/runs")
        assert down.status_code == 503 and "GitHub did not answer" in down.json()["detail"]
        assert browser.get("/runs").json()["total"] == 1  # and back


def test_an_expired_session_signs_in_again(store, github, runs):
    with App(store, github, session_hours=5 / 3600) as app, app.client() as browser:
        sign_in(app, browser)
        assert browser.get("/runs").status_code == 200
        time.sleep(5.5)
        # The browser dropped the cookie at Max-Age; sent anyway, the seal's expiry refuses it.
        assert browser.get("/runs").status_code == 401


def test_signing_out(app, runs):
    with app.client() as browser:
        sign_in(app, browser)
        session = browser.cookies[SESSION_COOKIE]
        out = browser.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert set_cookie(out, SESSION_COOKIE)[SESSION_COOKIE]["max-age"] == "0"
        assert browser.get("/").status_code == 303
    # A copy of the cookie kept elsewhere lives until it expires (the seal is stateless).
    copied = httpx.get(f"{app.url}/runs", cookies={SESSION_COOKIE: session}, timeout=10)
    assert copied.status_code == 200


def test_the_session_secret_is_made_once_and_kept_in_the_state_dir(store, github, tmp_path):
    state_dir = tmp_path / "state"
    with (
        App(store, github, session_secret=None, state_dir=state_dir) as app,
        app.client() as browser,
    ):
        sign_in(app, browser)
        session = browser.cookies[SESSION_COOKIE]
    secret = state_dir / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) == 64
    with App(store, github, session_secret=None, state_dir=state_dir) as restarted:
        kept = httpx.get(f"{restarted.url}/runs", cookies={SESSION_COOKIE: session}, timeout=10)
        assert kept.status_code == 200  # a restart keeps people signed in


# -- the sign-in's refusals ----------------------------------------------------------------------


def test_the_state_must_come_back_to_the_browser_that_started(app):
    with app.client() as mine, app.client() as theirs:
        button = mine.get("/login/github")
        back = httpx.get(button.headers["location"], timeout=10)
        callback = urlsplit(back.headers["location"])
        # CSRF: another browser is made to open my callback; it has no state cookie.
        forged = theirs.get(f"{callback.path}?{callback.query}")
        assert forged.status_code == 400
        assert "not started from this browser" in forged.text
        assert SESSION_COOKIE not in theirs.cookies
        # A state that is not the one given: refused too, even with a state cookie.
        other = dict(parse_qsl(callback.query), state="guessed")
        assert mine.get(callback.path, params=other).status_code == 400
        assert SESSION_COOKIE not in mine.cookies


def test_a_used_or_made_up_code_is_refused(app):
    with app.client() as browser:
        button = browser.get("/login/github")
        back = httpx.get(button.headers["location"], timeout=10)
        query = dict(parse_qsl(urlsplit(back.headers["location"]).query))
        made_up = browser.get("/login/callback", params={**query, "code": "0" * 20})
        assert made_up.status_code == 400
        assert "The code passed is incorrect or expired" in made_up.text


def test_declining_on_github(app, github):
    github.sign_in_as("alice", approve=False)
    with app.client() as browser:
        button = browser.get("/login/github")
        back = httpx.get(button.headers["location"], timeout=10)
        callback = urlsplit(back.headers["location"])
        declined = browser.get(f"{callback.path}?{callback.query}")
        assert declined.status_code == 403
        assert "The user has denied your application access" in declined.text
        assert 'href="/login/github?' in declined.text  # and a way to try again


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_after_signing_in_only_this_site_is_a_destination(app, target):
    with app.client() as browser:
        button = browser.get("/login/github", params={"next": target})
        back = httpx.get(button.headers["location"], timeout=10)
        callback = urlsplit(back.headers["location"])
        done = browser.get(f"{callback.path}?{callback.query}")
        assert done.status_code == 303 and done.headers["location"] == "/"


def test_a_forged_session_cookie_is_nobody(app, runs):
    for forged in ("x", "A" * 200, "e30", Seal(b"k" * 32).close("session", {}, 60)):
        answer = httpx.get(f"{app.url}/runs", cookies={SESSION_COOKIE: forged}, timeout=10)
        assert answer.status_code == 401
        assert set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]["max-age"] == "0"


# -- anonymous, the token, and closed ------------------------------------------------------------


def test_the_anonymous_are_sent_to_sign_in_or_get_401(app, runs):
    run = runs[READABLE]
    with app.client() as anonymous:
        for path in ("/", f"/runs/{run}/page", "/stats?days=7"):
            page = anonymous.get(path)
            assert page.status_code == 303
            assert page.headers["location"] == "/login?" + urlencode({"next": path})
        for path in ("/runs", f"/runs/{run}", "/stats.json", f"/runs/{run}/report"):
            answer = anonymous.get(path)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "authentication required" in answer.json()["detail"]
        # Bad parameters are not even looked at: nothing about the API is told.
        assert anonymous.get("/runs", params={"page": "x"}).status_code == 401
        # A browser following a status's "Details" link is sent through the sign-in.
        report = anonymous.get(f"/runs/{run}/report", headers={"Accept": "text/html"})
        assert report.status_code == 303
        for path in ("/healthz", "/readyz", "/metrics", "/login"):
            assert anonymous.get(path).status_code == 200, path
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert anonymous.get(path).status_code == 404, path


def test_the_token_sees_every_run(app, runs):
    with app.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        listed = client.get("/runs").json()
        assert sorted(item["repository"] for item in listed["items"]) == sorted([READABLE, *HIDDEN])
        for run in runs.values():
            assert client.get(f"/runs/{run}").status_code == 200
            assert client.get(f"/runs/{run}/page").status_code == 200
        assert client.get("/").status_code == 200
    for wrong in (f"Bearer {TOKEN[:-1]}x", "Bearer", f"Basic {TOKEN}", "Bearer \u00e9t\u00e9"):
        answer = httpx.get(
            f"{app.url}/runs",
            headers={"Authorization": wrong.encode("latin-1")},
            timeout=10,
        )
        assert answer.status_code == 401, wrong
        assert answer.json() == {"detail": "invalid bearer token"}


def test_without_oauth_or_token_the_history_is_closed(store, runs):
    with App(store, None) as app, app.client() as anonymous:
        api = anonymous.get("/runs")
        assert api.status_code == 401
        detail = api.json()["detail"]
        for setting in (
            "GATEKEEPER_OAUTH_CLIENT_ID",
            "GATEKEEPER_OAUTH_CLIENT_SECRET",
            "GATEKEEPER_DASHBOARD_TOKEN",
        ):
            assert setting in detail
        page = anonymous.get("/")
        assert page.status_code == 401 and "GATEKEEPER_DASHBOARD_TOKEN" in page.text
        assert anonymous.get("/login").status_code == 401
        assert (
            anonymous.get("/runs", headers={"Authorization": "Bearer anything"}).status_code == 401
        )
        assert anonymous.get("/healthz").status_code == 200


def test_a_token_without_oauth_explains_the_sign_in_page(store, runs):
    with App(store, None, dashboard_token=TOKEN) as app, app.client() as anonymous:
        assert anonymous.get("/").headers["location"] == "/login?next=%2F"
        page = anonymous.get("/login")
        assert page.status_code == 200 and "Sign-in with GitHub is not configured" in page.text
        assert "/login/github" not in page.text
        assert (
            anonymous.get("/runs")
            .json()["detail"]
            .endswith("send GATEKEEPER_DASHBOARD_TOKEN as a bearer token")
        )
        token = {"Authorization": f"Bearer {TOKEN}"}
        assert anonymous.get("/runs", headers=token).json()["total"] == 3
