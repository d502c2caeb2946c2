"""Logging in like a client does: the token endpoint of a real API on loopback, per suite.

The API here is OAuth2's password flow as FastAPI's tutorial writes it (a form with username
and password, `{"access_token": ..., "token_type": "bearer"}` back), plus a JSON login; it
counts the logins, so a test can tell one login per suite from one per run.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.checking import RunContext, Suite, run_suite
from bot.checking.auth import Credentials, LoginFailed
from bot.judging.verdict import Status
from bot.policy.model import Auth
from bot.policy.yamlfile import ConfigError, load_model
from tests.engine.test_validate import validate as validate_cli
from tests.helpers import ITEMS_POLICY, commit, free_port, git, items_repo, serving

PASSWORD = "s3cret-pw"


def _app() -> FastAPI:
    app = FastAPI()
    app.state.logins = 0

    def token_for(username: str, password: str) -> JSONResponse:
        if (username, password) != ("admin@example.com", PASSWORD):
            return JSONResponse({"detail": "Incorrect email or password"}, status_code=400)
        app.state.logins += 1
        token = f"tok-{app.state.logins}"
        return JSONResponse({"access_token": token, "token_type": "bearer"})

    @app.post("/api/v1/login/access-token")
    async def form_login(request: Request) -> JSONResponse:
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = parse_qs((await request.body()).decode())
        return token_for(form["username"][0], form["password"][0])

    @app.post("/api/v1/login/json")
    async def json_login(request: Request) -> JSONResponse:
        body = await request.json()
        response = token_for(body["user"]["email"], body["password"])
        if response.status_code == 200:  # another shape: the token nested, status 201
            token = response.body.decode().split('"')[3]
            return JSONResponse({"data": {"token": token}}, status_code=201)
        return response

    @app.get("/api/v1/users/me")
    def me(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer tok-"):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        return JSONResponse({"email": "admin@example.com", "token": header.split()[1]})

    @app.get("/logins")
    def logins() -> dict[str, Any]:
        return {"count": app.state.logins}

    return app


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    with serving(_app()) as url:
        yield url


class _NoLogs:
    def log_mark(self, source: str) -> int:
        return 0

    def logs(self, source: str, since: int = 0) -> str:
        return ""


VARIABLES = {"FIRST_SUPERUSER": "admin@example.com", "FIRST_SUPERUSER_PASSWORD": PASSWORD}

FORM_LOGIN = """\
type: login
login:
  path: /api/v1/login/access-token
  form: {username: "${FIRST_SUPERUSER}", password: "${FIRST_SUPERUSER_PASSWORD}"}
  token: $.access_token
"""

JSON_LOGIN = """\
type: login
login:
  path: /api/v1/login/json
  json: {user: {email: "${FIRST_SUPERUSER}"}, password: "${FIRST_SUPERUSER_PASSWORD}"}
  token: $.data.token
  status: 201
header: Authorization
value: "Bearer {token}"
"""

ME = """\
id: me
title: who am I
steps:
  - id: me
    http: {path: /api/v1/users/me}
    expect: {status: 200, json: {$.email: admin@example.com}}
    capture: {token: $.token}
  - id: anonymous
    http: {path: /api/v1/users/me, auth: false}
    expect: {status: 401}
"""


def auth(text: str) -> Auth:
    return load_model("policy.yml", Auth, text=text)


def context(api_url: str, auth_text: str, variables: dict[str, str] = VARIABLES) -> RunContext:
    return RunContext(
        api_url=api_url,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        logs=_NoLogs(),
        credentials=Credentials(auth(auth_text), "policy.yml", variables),
    )


def suite(text: str = ME) -> Suite:
    return load_model("me.yml", Suite, text=text)


def logins(api_url: str) -> int:
    return httpx.get(f"{api_url}/logins").json()["count"]


@pytest.mark.parametrize("auth_text", [FORM_LOGIN, JSON_LOGIN], ids=["form", "json"])
def test_login_gets_a_token_per_suite(api_url: str, auth_text: str) -> None:
    ctx = context(api_url, auth_text)
    before = logins(api_url)
    first, second = run_suite(suite(), ctx), run_suite(suite(), ctx)
    for result in (first, second):
        assert result.login_error is None
        assert [s.criterion.id for s in result.steps] == ["me/me", "me/anonymous"]
        for step in result.steps:
            assert step.criterion.status is Status.passed, step.criterion.evidence
    # One login per suite, each with its own token.
    assert logins(api_url) == before + 2
    assert ctx.variables["token"] == f"tok-{before + 2}"
    assert first.steps[0].notes[0] == "sent auth headers: Authorization"


def test_wrong_password_fails_the_login_and_runs_no_step(api_url: str) -> None:
    ctx = context(api_url, FORM_LOGIN, {**VARIABLES, "FIRST_SUPERUSER_PASSWORD": "wrong"})
    result = run_suite(suite(), ctx)
    login, me, anonymous = result.steps
    assert login.criterion.id == "me/login"
    assert login.criterion.status is Status.failed and login.criterion.required
    assert login.criterion.evidence == (
        "FAILED: POST /api/v1/login/access-token -> 400, expected 2xx; "
        'body: {"detail":"Incorrect email or password"}'
    )
    assert login.response_status == 400
    assert result.login_error == login.criterion.evidence
    for step in (me, anonymous):
        assert step.criterion.status is Status.skipped
        assert step.criterion.evidence == "not run: login failed"
    # The password is not in the evidence.
    assert "wrong" not in result.model_dump_json()


def test_login_failures_say_what_came_back(api_url: str) -> None:
    wrong_path = FORM_LOGIN.replace("$.access_token", "$.token")
    with httpx.Client(timeout=5) as client:
        with pytest.raises(LoginFailed, match=r"-> 200, but \$\.token matched nothing"):
            Credentials(auth(wrong_path), "p", VARIABLES).headers(api_url, client)
        with pytest.raises(LoginFailed, match="-> 201, expected 200 or 204"):
            Credentials(
                auth(JSON_LOGIN.replace("status: 201", "status: [200, 204]")), "p", VARIABLES
            ).headers(api_url, client)
        down = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(LoginFailed, match=r"POST /api/v1/login/access-token failed: .*onnect"):
            Credentials(auth(FORM_LOGIN), "p", VARIABLES).headers(down, client)


def test_a_suite_without_authenticated_requests_does_not_log_in(api_url: str) -> None:
    ctx = context(api_url, FORM_LOGIN, {**VARIABLES, "FIRST_SUPERUSER_PASSWORD": "wrong"})
    result = run_suite(
        suite(
            """
            id: public
            title: t
            steps:
              - id: anonymous
                http: {path: /api/v1/users/me, auth: false}
                expect: {status: 401}
            """
        ),
        ctx,
    )
    assert result.login_error is None
    assert [s.criterion.status for s in result.steps] == [Status.passed]


def test_jwt_and_bearer_need_no_api() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with httpx.Client() as client:
        bearer = Auth(type="bearer", secret_env="T", value="Token {token}")
        assert Credentials(bearer, "p", {"T": "abc"}).headers(nowhere, client) == {
            "Authorization": "Token abc"
        }
        jwt = Auth(type="jwt", secret_env="T", claims={"sub": "admin"}, header="X-Auth")
        (value,) = Credentials(jwt, "p", {"T": "k" * 32}).headers(nowhere, client).values()
        assert value.startswith("Bearer ey")
        assert Credentials(Auth(), "p", {}).headers(nowhere, client) == {}


# --------------------------------------------------------------------------- configuration


def test_an_unknown_variable_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        Credentials(auth(FORM_LOGIN), "gatekeeper.yml", {"FIRST_SUPERUSER": "a"})
    assert info.value.problems == [
        "gatekeeper.yml: auth.login.form.password needs ${FIRST_SUPERUSER_PASSWORD}, which is "
        "neither in api.env nor passed: set it and name it in GATEKEEPER_PASS_ENV"
    ]
    with pytest.raises(ConfigError, match=r"auth.login.json.user.email needs \$\{FIRST_SUPER"):
        Credentials(auth(JSON_LOGIN), "gatekeeper.yml", {})
    with pytest.raises(ConfigError, match=r"auth.secret_env names \$T, which is not passed"):
        Credentials(Auth(type="bearer", secret_env="T"), "gatekeeper.yml", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type: login\n", "auth type 'login' needs 'login'"),
        (
            FORM_LOGIN.replace("  token:", "  json: {a: b}\n  token:"),
            "give exactly one of 'form' and 'json'",
        ),
        (
            "type: login\nlogin: {path: /login, token: $.t}\n",
            "give exactly one of 'form' and 'json'",
        ),
        (FORM_LOGIN.replace("type: login", "type: bearer\nsecret_env: T"), "'login' is for auth"),
        (FORM_LOGIN + "secret_env: T\n", "not from 'secret_env'"),
        (FORM_LOGIN + "value: 'Bearer {tok}'\n", "must hold {token} and no other"),
        (FORM_LOGIN.replace("$.access_token", "$[?"), "invalid JSONPath"),
        (FORM_LOGIN.replace("/api/v1", "api/v1"), "should match pattern '^/'"),
    ],
)
def test_the_policy_model_rejects_bad_logins(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        auth(textwrap.dedent(text))
    assert message in str(info.value)
    assert "policy.yml:" in str(info.value)


# --------------------------------------------------------------------------- the run


API = """\
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

LOGIN = "{login}"


class Api(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, {{"ok": True}})
        if self.headers.get("Authorization") == "Bearer t-admin":
            return self.reply(200, {{"user": "admin"}})
        self.reply(401, {{"detail": "not authenticated"}})

    def do_POST(self):
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        if self.path == LOGIN and form.get("password") == [os.environ["ADMIN_PASSWORD"]]:
            return self.reply(200, {{"access_token": "t-admin"}})
        self.reply(400, {{"detail": "bad login"}})


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Api).serve_forever()
"""

RUN_POLICY = (
    ITEMS_POLICY
    + """\
api: {command: python api.py, env: {ADMIN_PASSWORD: "${GK_TEST_PASSWORD}"}}
auth:
  type: login
  login:
    path: /login
    form: {username: admin, password: "${ADMIN_PASSWORD}"}
    token: $.access_token
"""
)

ME_CHECK = """\
id: me
title: the admin is logged in
steps:
  - id: me
    http: {path: /me}
    expect: {status: 200, json: {$.user: admin}}
"""

PASSED = {"GATEKEEPER_PASS_ENV": "GK_TEST_PASSWORD", "GK_TEST_PASSWORD": "pw-1234"}


def validate(repo: Path, head: str) -> tuple[int, dict]:
    """`gatekeeper validate` as the engine's tests run it, with the passed secret."""
    proc, verdict = validate_cli(repo, head, env=PASSED)
    assert verdict is not None, proc.stderr
    return proc.returncode, verdict


def login_repo(tmp_path: Path, base_login: str, head_login: str, policy: str = RUN_POLICY) -> Path:
    repo = items_repo(tmp_path, policy)
    commit(repo, {"api.py": API.format(login=base_login), "checks/me.yml": ME_CHECK}, "api")
    git(repo, "checkout", "-qb", "builder/login", "main")
    commit(repo, {"api.py": API.format(login=head_login), "NOTES": "x\n"}, "the change")
    git(repo, "checkout", "-q", "main")
    return repo


def test_a_login_failing_on_the_base_is_an_error(tmp_path: Path) -> None:
    code, verdict = validate(login_repo(tmp_path, "/signin", "/login"), "builder/login")
    assert code == 2 and verdict["decision"] == "error", verdict["summary"]
    assert "the base branch's login failed (me): FAILED: POST /login -> 400" in verdict["summary"]
    assert "no baseline" in verdict["summary"]


def test_a_login_failing_on_the_head_fails_its_criterion(tmp_path: Path) -> None:
    code, verdict = validate(login_repo(tmp_path, "/login", "/signin"), "builder/login")
    assert code == 1 and verdict["decision"] == "reject", verdict["summary"]
    criteria = {c["id"]: c for c in verdict["criteria"]}
    assert criteria["me/login"]["status"] == "failed" and criteria["me/login"]["required"]
    assert "POST /login -> 400, expected 2xx" in criteria["me/login"]["evidence"]
    assert criteria["me/me"]["status"] == "skipped"
    assert criteria["me/me"]["evidence"] == "not run: login failed"
    assert "pw-1234" not in json.dumps(verdict)


def test_a_login_that_works_on_both_sides_approves(tmp_path: Path) -> None:
    code, verdict = validate(login_repo(tmp_path, "/login", "/login"), "builder/login")
    assert code == 0 and verdict["decision"] == "approve", verdict["summary"]
    me = next(c for c in verdict["criteria"] if c["id"] == "me/me")
    assert me["status"] == "passed"
    assert [row["base"] for row in verdict["evidence"]["baseline"] if row["id"] == "me/me"] == [
        "passed"
    ]


def test_an_unknown_name_in_the_login_is_a_configuration_error(tmp_path: Path) -> None:
    policy = RUN_POLICY.replace("${ADMIN_PASSWORD}", "${NOT_PASSED}")
    code, verdict = validate(login_repo(tmp_path, "/login", "/login", policy), "builder/login")
    assert code == 2 and verdict["decision"] == "error"
    assert "auth.login.form.password needs ${NOT_PASSED}" in verdict["summary"]
