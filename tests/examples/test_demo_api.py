"""The demo API, run for real: uvicorn subprocesses against a real PostgreSQL, per branch.

The demo is only convincing if each case fails for the reason it claims, so these tests
start the API from the built demo repository's branches and exercise it over HTTP and SQL,
then run the project's own check suites against every case.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import psycopg
import pytest

from bot.checking.auth import Credentials
from bot.checking.runner import RunContext, load_suites, run_suite
from bot.policy.model import Auth
from bot.sandbox.postgres import APP_ROLE
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SECRET = "demo-secret-for-tests-0123456789abcdef"  # 32+ bytes: PyJWT warns about shorter
START_TIMEOUT = 20.0


def _load_build_demo() -> ModuleType:
    if "build_demo" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_demo", EXAMPLES / "build_demo.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_demo"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["build_demo"]


build_demo = _load_build_demo()
HEADS = {case.name: case.head for case in build_demo.CASES}


def token(sub: str | None = "admin", secret: str = SECRET) -> str:
    claims: dict[str, Any] = {"role": "admin"}
    if sub is not None:
        claims["sub"] = sub
    return jwt.encode(claims, secret, algorithm="HS256")


def auth(sub: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub)}"}


@dataclass
class Api:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def healthy(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, trust_env=False)


Launch = Callable[..., Api]


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("demo") / "repo"
    build_demo.build(repo)
    return repo


@pytest.fixture(scope="module")
def checkout(demo_repo: Path) -> Callable[[str], Path]:
    """The work tree of a ref, made once per module: the API runs from it as from a clone."""
    trees: dict[str, Path] = {}

    def get(ref: str) -> Path:
        if ref not in trees:
            tree = demo_repo.parent / "trees" / ref.replace("/", "_")
            subprocess.run(
                ["git", "worktree", "add", "-q", "--detach", str(tree), ref],
                cwd=demo_repo,
                check=True,
            )
            trees[ref] = tree
        return trees[ref]

    return get


@pytest.fixture
def database_url(pg_sandbox: Any) -> Iterator[str]:
    """A fresh database per test, so every start-up migrates from nothing; the API connects
    as the pipeline lets it, the sandbox's application role over TCP."""
    name = f"demo_{uuid.uuid4().hex[:12]}"
    pg_sandbox.psql(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
    yield urlsplit(pg_sandbox.app_database_url)._replace(path=f"/{name}").geturl()
    pg_sandbox.psql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start the API like the policy does; return once it is healthy or has exited."""
    started: list[subprocess.Popen[bytes]] = []

    def start(workdir: Path, database_url: str, **env: str) -> Api:
        port = free_port()
        log = tmp_path / f"api-{len(started)}.log"
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=workdir,
                env={**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": SECRET, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        api = Api(process, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None:
            assert time.monotonic() < deadline, f"API neither healthy nor exited:\n{api.output()}"
            with suppress(httpx.HTTPError):
                if httpx.get(f"{api.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            time.sleep(0.05)
        return api

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _stop(api: Api) -> None:
    api.process.terminate()
    # uvicorn shuts down gracefully, then re-raises the signal so its exit status tells why.
    assert api.process.wait(timeout=10) in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in api.output()


def _query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


# --------------------------------------------------------------------------- the fix


def test_api_routes_need_a_valid_token(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    api = launch(checkout(HEADS["fix"]), database_url)
    assert api.healthy, api.output()
    with api.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        for headers in (
            {},
            {"Authorization": "Basic YWRtaW46YWRtaW4="},
            {"Authorization": f"Bearer {token(secret='another-secret-0123456789abcdef!')}"},
            {"Authorization": f"Bearer {token(sub=None)}"},
        ):
            response = client.get("/api/v1/sessions", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.post("/api/v1/sessions", json={"template_name": "vscode"}).status_code == 401


def test_fix_branch_runs_the_whole_session_lifecycle(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    api = launch(checkout(HEADS["fix"]), database_url)
    assert api.healthy, api.output()
    with api.client() as client:
        templates = client.get("/api/v1/templates", headers=auth()).json()
        assert templates["total"] == 3
        firefox = templates["templates"][0]
        assert (firefox["name"], firefox["tags"]) == ("firefox-browser", ["browser", "web"])

        created = client.post(
            "/api/v1/sessions", json={"template_name": "firefox-browser"}, headers=auth()
        )
        assert created.status_code == 201, created.text
        session = created.json()
        name = session["name"]
        assert re.fullmatch(r"admin-firefox-browser-[0-9a-f]{8}", name)
        assert {k: session[k] for k in ("user", "template", "state", "tags", "agent_id")} == {
            "user": "admin",
            "template": "firefox-browser",
            "state": "pending",
            "tags": [],
            "agent_id": "k8s-prod-cluster",
        }
        assert session["cluster_id"] == "prod-us-east-1"

        assert client.get(f"/api/v1/sessions/{name}", headers=auth()).json() == session
        listed = client.get("/api/v1/sessions", headers=auth()).json()
        assert [s["name"] for s in listed["sessions"]] == [name]
        # Sessions are private to their user.
        assert client.get(f"/api/v1/sessions/{name}", headers=auth("bob")).status_code == 404
        assert client.get("/api/v1/sessions", headers=auth("bob")).json()["total"] == 0
        assert _query(database_url, "SELECT state, agent_id FROM sessions WHERE id = %s", name) == [
            ("pending", "k8s-prod-cluster")
        ]

        deleted = client.delete(f"/api/v1/sessions/{name}", headers=auth())
        assert deleted.status_code == 202
        assert deleted.json() == {"name": name, "message": "Session termination requested"}
        assert client.get(f"/api/v1/sessions/{name}", headers=auth()).status_code == 404
        assert client.delete(f"/api/v1/sessions/{name}", headers=auth()).status_code == 404
        assert _query(database_url, "SELECT id FROM sessions WHERE id = %s", name) == []

    log = api.output()
    assert "Fetched template firefox-browser from database (ID: 1)" in log
    assert f"Created session {name} in database with state=pending" in log
    assert '"POST /api/v1/sessions HTTP/1.1" 201' in log  # uvicorn's access log is kept
    assert "ERROR" not in log and "Traceback" not in log


def test_sessions_keep_their_tags_as_an_array(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    api = launch(checkout(HEADS["fix"]), database_url)
    with api.client() as client:
        created = client.post(
            "/api/v1/sessions",
            json={"template_name": "vscode", "tags": ["qa", "night"]},
            headers=auth(),
        )
        assert created.status_code == 201, created.text
        assert created.json()["tags"] == ["qa", "night"]
        assert client.post(
            "/api/v1/sessions", json={"template_name": "no-such-template"}, headers=auth()
        ).json() == {"detail": "template no-such-template not found"}
    rows = _query(database_url, "SELECT tags FROM sessions WHERE tags @> ARRAY['night']")
    assert rows == [(["qa", "night"],)]


def test_fix_branch_starts_again_on_its_own_schema(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    workdir = checkout(HEADS["fix"])
    _stop(launch(workdir, database_url))
    again = launch(workdir, database_url)
    assert again.healthy, again.output()
    assert _query(database_url, "SELECT count(*) FROM templates") == [(3,)]
    assert _query(database_url, "SELECT count(*) FROM agents") == [(1,)]
    indexes = _query(
        database_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_sessions_tags'"
    )
    assert indexes == [("CREATE INDEX idx_sessions_tags ON public.sessions USING gin (tags)",)]


# --------------------------------------------------------------------------- the other cases


def test_main_fails_to_create_sessions_for_want_of_the_tags_column(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    api = launch(checkout("main"), database_url)
    assert api.healthy, api.output()
    with api.client() as client:
        assert client.get("/api/v1/templates/firefox-browser", headers=auth()).status_code == 200
        response = client.post(
            "/api/v1/sessions", json={"template_name": "firefox-browser"}, headers=auth()
        )
    assert response.status_code == 500
    assert response.json() == {"detail": 'error creating session: column "tags" does not exist'}
    assert 'ERROR creating session: column "tags" does not exist' in api.output()
    assert "Traceback" not in api.output()


def test_plain_alter_table_fails_on_the_second_start(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    workdir = checkout(HEADS["non-idempotent"])
    first = launch(workdir, database_url)
    assert first.healthy, first.output()
    _stop(first)
    second = launch(workdir, database_url)
    assert second.process.wait(timeout=10) == 1
    output = second.output()
    assert 'migration failed: column "tags" of relation "sessions" already exists' in output
    assert "Traceback" not in output


def test_destructive_branch_breaks_session_creation_again(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    api = launch(checkout(HEADS["destructive"]), database_url)
    with api.client() as client:
        response = client.post(
            "/api/v1/sessions", json={"template_name": "firefox-browser"}, headers=auth()
        )
    assert response.status_code == 500
    assert 'column "cluster_id" does not exist' in response.json()["detail"]


def test_regression_branch_breaks_only_the_template_read(
    checkout: Callable[[str], Path], database_url: str, launch: Launch
) -> None:
    api = launch(checkout(HEADS["regression"]), database_url)
    with api.client() as client:
        assert client.get("/api/v1/templates", headers=auth()).status_code == 200
        created = client.post(
            "/api/v1/sessions", json={"template_name": "firefox-browser"}, headers=auth()
        )
        assert created.status_code == 201
        read = client.get("/api/v1/templates/firefox-browser", headers=auth())
    assert read.status_code == 500
    assert 'ERROR reading template firefox-browser: Scan error on column "tags"' in api.output()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "DATABASE_URL is not set"),
        ("postgresql:///app?host=/var/run/postgresql", "DATABASE_URL names no TCP host"),
        ("mysql://root@127.0.0.1/app", "DATABASE_URL must start with postgresql://"),
    ],
)
def test_refuses_to_start_without_a_tcp_database_url(
    launch: Launch, url: str, problem: str
) -> None:
    api = launch(EXAMPLES / "sessions-api", url)
    assert api.process.wait(timeout=10) == 1
    assert f"configuration error: {problem}" in api.output()
    assert "Traceback" not in api.output()


def test_logs_the_migration_error_and_exits_when_the_database_is_unreachable(
    launch: Launch,
) -> None:
    api = launch(EXAMPLES / "sessions-api", f"postgresql://postgres@127.0.0.1:{free_port()}/app")
    assert api.process.wait(timeout=10) == 1
    assert "migration failed: connection failed" in api.output()


# --------------------------------------------------------------------------- the check suites

# Which suites fail on a first start of each case's API; the rest must pass.
FAILING_SUITES = {
    "fix": set(),
    "no-fix": {"lifecycle", "P1-SCHEMA-001", "P1-SCHEMA-002"},
    "non-idempotent": {"P1-SCHEMA-002"},  # no GIN index; its real failure is the restart
    "destructive": {"lifecycle", "P1-SCHEMA-001", "P1-SCHEMA-002"},
    "regression": {"P1-DATABASE-001"},
}


class _FileLog:
    """The API log as the runner reads it from a sandbox: byte offsets into one file."""

    def __init__(self, path: Path):
        self.path = path

    def log_mark(self, source: str) -> int:
        return self.path.stat().st_size

    def logs(self, source: str, since: int = 0) -> str:
        return self.path.read_bytes()[since:].decode("utf-8", errors="replace")


@pytest.mark.parametrize("name", FAILING_SUITES)
def test_check_suites_judge_each_case(
    checkout: Callable[[str], Path], database_url: str, launch: Launch, name: str
) -> None:
    api = launch(checkout(HEADS[name]), database_url)
    assert api.healthy, api.output()
    context = RunContext(
        api_url=api.url,
        database_url=database_url,
        logs=_FileLog(api.log),
        credentials=Credentials(Auth(type="bearer", secret_env="T"), "test", {"T": token()}),
    )
    suites = load_suites([ROOT / "checks" / "lifecycle", ROOT / "checks" / "regression"])
    results = {suite.id: run_suite(suite, context) for suite in suites}
    not_passed = [
        step.criterion
        for result in results.values()
        for step in result.steps
        if step.criterion.status.value != "passed"
    ]
    failing = {criterion.suite for criterion in not_passed}
    evidence = "\n".join(f"{c.id}: {c.status.value}: {c.evidence}" for c in not_passed)
    assert failing == FAILING_SUITES[name], evidence
