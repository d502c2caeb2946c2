"""The suite runner against a real HTTP server, a real PostgreSQL and real log files.

Every failure mode must end as a failed or skipped criterion with evidence a person can read;
nothing that did not run may count as passed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from bot.checking import RunContext, StepResult, Suite, run_suite
from bot.checking.auth import Credentials
from bot.judging.verdict import Status
from bot.policy.model import Auth
from bot.policy.yamlfile import load_model
from tests.helpers import free_port

TOKEN = "Bearer test-token"


# --------------------------------------------------------------------------- the API under test


def _app() -> FastAPI:
    app = FastAPI()
    sessions: dict[str, dict[str, Any]] = {}

    @app.post("/api/v1/sessions", status_code=201)
    async def create_session(request: Request) -> dict[str, Any]:
        body = await request.json()
        session = {
            "id": str(uuid.uuid4()),
            "name": f"{body.get('user', 'admin')}-firefox-browser-0ba8c10f",
            "tags": ["web", "admin"],
            "active": True,
            "count": 3,
            "note": None,
            "empty": [],
            "owner": {"id": 7},
        }
        sessions[session["id"]] = session
        return session

    @app.get("/api/v1/sessions/{session_id}")
    def get_session(session_id: str) -> JSONResponse:
        if session_id not in sessions:
            return JSONResponse({"detail": "session not found"}, status_code=404)
        return JSONResponse(sessions[session_id])

    @app.get("/api/v1/users")
    def users() -> list[dict[str, str]]:
        return [{"name": "ada"}, {"name": "bob"}]

    @app.get("/items")
    def items() -> dict[str, Any]:
        return {"items": [{"id": 1}, {"id": 2}]}

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.3)
        return {"slow": True}

    @app.get("/text")
    def text() -> PlainTextResponse:
        return PlainTextResponse("plain words, not JSON")

    @app.get("/private")
    def private(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != TOKEN:
            return JSONResponse({"detail": "unauthorized"}, status_code=401)
        return JSONResponse({"user": "admin"})

    @app.get("/headers")
    def headers(request: Request) -> dict[str, str | None]:
        return {
            "authorization": request.headers.get("authorization"),
            "x_trace": request.headers.get("x-trace"),
        }

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return await request.json()

    @app.post("/log")
    async def log(request: Request) -> dict[str, bool]:
        """Stands in for the API writing its own log while a request is served."""
        body = await request.json()
        with Path(body["path"]).open("a", encoding="utf-8") as f:
            f.write(body["line"] + "\n")
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test API did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


# --------------------------------------------------------------------------- logs and context


class FileLogs:
    """Log sources as append-only files; a mark is a byte offset, as in the real sandbox."""

    def __init__(self, directory: Path):
        self.files = {source: directory / f"{source}.log" for source in ("api", "database")}
        for file in self.files.values():
            file.touch()

    def write(self, source: str, *lines: str) -> None:
        with self.files[source].open("a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)

    def log_mark(self, source: str) -> int:
        return self.files[source].stat().st_size

    def logs(self, source: str, since: int = 0) -> str:
        with self.files[source].open("rb") as f:
            f.seek(since)
            return f.read().decode("utf-8")


class ClockLogs:
    """Log sources whose mark is a clock reading, new at every call, as in the containers
    sandbox (the engine stamps each line; a read returns the lines stamped since)."""

    def __init__(self, _directory: Path):
        self.lines: dict[str, list[tuple[int, str]]] = {"api": [], "database": []}

    def write(self, source: str, *lines: str) -> None:
        self.lines[source] += [(time.time_ns(), line + "\n") for line in lines]

    def log_mark(self, source: str) -> int:
        return time.time_ns()

    def logs(self, source: str, since: int = 0) -> str:
        return "".join(line for stamp, line in self.lines[source] if stamp >= since)


@pytest.fixture
def logs(tmp_path: Path) -> FileLogs:
    return FileLogs(tmp_path)


@pytest.fixture
def ctx(api_url: str, logs: FileLogs) -> RunContext:
    return RunContext(
        api_url=api_url,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        logs=logs,
        credentials=Credentials(Auth(type="bearer", secret_env="T"), "test", {"T": "test-token"}),
        step_timeout=5.0,
    )


def suite(text: str) -> Suite:
    return load_model("inline.yml", Suite, text=textwrap.dedent(text))


def run(text: str, ctx: RunContext) -> dict[str, StepResult]:
    result = run_suite(suite(text), ctx)
    # Every result goes into the verdict's evidence: it must survive a JSON round trip.
    json.loads(result.model_dump_json())
    return {step.criterion.id.split("/", 1)[1]: step for step in result.steps}


def one(text: str, ctx: RunContext) -> StepResult:
    (step,) = run(text, ctx).values()
    return step


CREATE = """
id: s
title: sessions
steps:
  - id: create
    http: {method: POST, path: /api/v1/sessions, json: {user: admin}}
"""


# --------------------------------------------------------------------------- http


def test_passing_step_is_a_criterion_with_the_compared_values(ctx: RunContext) -> None:
    result = run_suite(
        suite(
            """
            id: P1-SESSIONS-001
            title: sessions
            kind: regression
            bug_id: P1-SESSIONS-001
            steps:
              - id: create
                required: false
                http: {method: POST, path: /api/v1/sessions, json: {user: admin}}
                expect:
                  status: 201
                  json: {$.name: {matches: ^admin-}}
            """
        ),
        ctx,
    )
    assert (result.suite_id, result.kind, result.bug_id) == (
        "P1-SESSIONS-001",
        "regression",
        "P1-SESSIONS-001",
    )
    step = result.steps[0]
    crit = step.criterion
    assert crit.status is Status.passed, crit.evidence
    assert crit.id == "P1-SESSIONS-001/create"
    assert crit.title == "POST /api/v1/sessions"
    assert (crit.suite, crit.bug_id, crit.required) == ("P1-SESSIONS-001", "P1-SESSIONS-001", False)
    assert crit.evidence.startswith("POST /api/v1/sessions -> 201 in ")
    assert '$.name = "admin-firefox-browser-0ba8c10f" matches ^admin-' in crit.evidence
    assert crit.duration_ms is not None and crit.duration_ms > 0
    assert (step.kind, step.request, step.response_status) == ("http", "POST /api/v1/sessions", 201)
    assert step.response_excerpt.startswith('{\n  "id": ')  # pretty-printed JSON
    assert step.notes == ["sent auth headers: Authorization"]


def test_wrong_status_fails_with_both_codes_and_a_body_excerpt(ctx: RunContext) -> None:
    step = one(CREATE + "    expect: {status: 200}\n", ctx)
    assert step.criterion.status is Status.failed
    assert "expected status 200, got 201" in step.criterion.evidence
    assert '"name": "admin-firefox-browser-0ba8c10f"' in step.criterion.evidence


def test_status_defaults_to_any_2xx(ctx: RunContext) -> None:
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: ok
            http: {path: /items}
          - id: missing
            http: {path: /api/v1/sessions/nope}
        """,
        ctx,
    )
    assert steps["ok"].criterion.status is Status.passed
    assert steps["missing"].criterion.status is Status.failed
    assert "expected status 2xx, got 404" in steps["missing"].criterion.evidence
    assert "session not found" in steps["missing"].criterion.evidence


def test_status_may_be_a_list(ctx: RunContext) -> None:
    step = one(CREATE + "    expect: {status: [200, 201]}\n", ctx)
    assert step.criterion.status is Status.passed, step.criterion.evidence


@pytest.mark.parametrize(
    ("path", "expectation", "passes", "evidence"),
    [
        ("$.name", "admin-firefox-browser-0ba8c10f", True, '$.name = "admin-firefox'),
        ("$.count", '"3"', False, '$.count = 3, expected "3"'),
        ("$.count", "3.0", True, "$.count = 3"),
        ("$.active", "1", False, "$.active = true, expected 1"),
        ("$.note", "null", True, "$.note = null"),
        ("$.nothing", "null", False, "$.nothing is missing (expected null)"),
        ("$.owner", "{equals: {id: 7}}", True, '$.owner = {"id": 7}'),
        ("$.owner.id", "{equals: 8}", False, "$.owner.id = 7, expected 8"),
        ("$.name", "{matches: ^user-}", False, "does not match ^user-"),
        ("$.count", "{matches: ^3$}", True, "$.count = 3 matches ^3$"),
        ("$.tags", "{type: array}", True, "$.tags is array"),
        ("$.count", "{type: number}", True, "$.count is number"),
        ("$.count", "{type: string}", False, "$.count is integer (3), expected string"),
        ("$.active", "{type: integer}", False, "is boolean (true), expected integer"),
        ("$.tags", "{contains: admin}", True, '$.tags contains "admin"'),
        ("$.tags", "{contains: root}", False, 'does not contain "root"'),
        ("$.name", "{contains: firefox}", True, 'contains "firefox"'),
        ("$.count", "{contains: 3}", False, "cannot contain 3"),
        ("$.tags", "{length: 2}", True, "$.tags has length 2"),
        ("$.tags", "{length: 3}", False, "$.tags has length 2, expected 3"),
        ("$.count", "{length: 1}", False, "has no length"),
        ("$.note", "{exists: true}", True, "$.note exists"),
        ("$.nothing", "{exists: true}", False, "$.nothing is missing (expected it to exist)"),
        ("$.nothing", "{exists: false}", True, "$.nothing is absent"),
        ("$.name", "{exists: false}", False, "(expected it to be absent)"),
        ("$.empty", "[]", True, "$.empty = []"),
        ("$.empty", "{exists: true, length: 0}", True, "$.empty has length 0"),
        ("$.nothing", "{type: string, length: 2}", False, "missing (expected type string"),
    ],
)
def test_json_expectations(
    ctx: RunContext, path: str, expectation: str, passes: bool, evidence: str
) -> None:
    step = one(CREATE + f"    expect: {{json: {{'{path}': {expectation}}}}}\n", ctx)
    assert step.criterion.status is (Status.passed if passes else Status.failed)
    assert evidence in step.criterion.evidence


def test_paths_that_select_many_values_yield_a_list(ctx: RunContext) -> None:
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: names
            http: {path: /api/v1/users}
            expect:
              json:
                $[*].name: [ada, bob]
                $[0].name: ada
          - id: items
            http: {path: /items}
            expect:
              json:
                $.items[0].id: 1
                $.items[*].id: {contains: 2, length: 2}
                $.items[?(@.id > 5)].id: {exists: false}
                $.items[5].id: {exists: false}
        """,
        ctx,
    )
    for step in steps.values():
        assert step.criterion.status is Status.passed, step.criterion.evidence


def test_every_failed_expectation_is_named(ctx: RunContext) -> None:
    step = one(
        CREATE + "    expect: {status: 201, json: {$.count: 4, $.active: false, $.note: null}}\n",
        ctx,
    )
    evidence = step.criterion.evidence
    assert step.criterion.status is Status.failed
    assert "FAILED: $.count = 3, expected 4; $.active = true, expected false" in evidence
    assert "$.note" not in evidence.split("FAILED:")[1].split("body:")[0]


def test_non_json_response_fails_json_expectations(ctx: RunContext) -> None:
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: json
            http: {path: /text}
            expect: {json: {$.x: {exists: false}}}
          - id: plain
            http: {path: /text}
            expect: {body_matches: "^plain words"}
        """,
        ctx,
    )
    assert steps["json"].criterion.status is Status.failed
    assert "response is not JSON (content-type: text/plain" in steps["json"].criterion.evidence
    assert "plain words" in steps["json"].criterion.evidence
    assert steps["plain"].criterion.status is Status.passed
    assert steps["plain"].response_excerpt == "plain words, not JSON"


def test_capture_is_reused_in_path_and_expectations_and_later_suites(ctx: RunContext) -> None:
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: create
            http: {method: POST, path: /api/v1/sessions, json: {user: admin}}
            capture: {sid: $.id, owner: $.owner}
          - id: read
            http: {path: "/api/v1/sessions/${sid}"}
            expect: {status: 200, json: {$.id: "${sid}", $.owner: {equals: "${owner}"}}}
        """,
        ctx,
    )
    assert steps["create"].criterion.status is Status.passed
    assert steps["read"].criterion.status is Status.passed, steps["read"].criterion.evidence
    sid = ctx.variables["sid"]
    assert steps["read"].request == f"GET /api/v1/sessions/{sid}"
    assert steps["read"].criterion.title == "GET /api/v1/sessions/${sid}"
    assert ctx.variables["owner"] == {"id": 7}

    later = one(
        f"""
        id: later
        title: t
        steps:
          - id: again
            http: {{path: "/api/v1/sessions/${{sid}}"}}
            expect: {{json: {{$.id: "{sid}"}}}}
        """,
        ctx,
    )
    assert later.criterion.status is Status.passed, later.criterion.evidence


def test_variables_keep_their_json_type_in_bodies(ctx: RunContext) -> None:
    ctx.variables.update({"run_id": "abc", "n": 5})
    step = one(
        """
        id: s
        title: t
        steps:
          - id: echo
            http:
              method: POST
              path: /echo
              json: {n: "${n}", label: "run-${run_id}-${n}", nested: [{v: "${run_id}"}]}
            expect:
              json: {$.n: 5, $.label: run-abc-5, "$.nested[0].v": abc}
        """,
        ctx,
    )
    assert step.criterion.status is Status.passed, step.criterion.evidence


def test_step_needing_a_failed_capture_is_skipped_and_others_still_run(ctx: RunContext) -> None:
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: create
            http: {method: POST, path: /api/v1/sessions, json: {user: admin}}
            capture: {sid: $.session_id}
          - id: read
            http: {path: "/api/v1/sessions/${sid}"}
          - id: list
            http: {path: /api/v1/users}
          - id: early
            http: {path: "/api/v1/sessions/${later}"}
          - id: define
            http: {path: /items}
            capture: {later: "$.items[0].id"}
          - id: nowhere
            http: {path: "/x/${ghost}"}
        """,
        ctx,
    )
    create = steps["create"].criterion
    assert create.status is Status.failed
    assert "capture sid: $.session_id matched nothing" in create.evidence
    read = steps["read"].criterion
    assert read.status is Status.skipped
    assert read.duration_ms is None
    assert "${sid} is undefined: step 'create' should have captured it (failed)" in read.evidence
    assert steps["list"].criterion.status is Status.passed
    assert "only the later step 'define' captures it" in steps["early"].criterion.evidence
    assert steps["early"].criterion.status is Status.skipped
    assert "${ghost} is undefined: no run variable" in steps["nowhere"].criterion.evidence
    assert "sid" not in ctx.variables


def test_failed_capture_drops_a_stale_value_from_an_earlier_suite(ctx: RunContext) -> None:
    ctx.variables["sid"] = "left-over"
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: create
            http: {method: POST, path: /api/v1/sessions, json: {user: admin}}
            capture: {sid: $.nope}
          - id: read
            http: {path: "/api/v1/sessions/${sid}"}
        """,
        ctx,
    )
    assert steps["read"].criterion.status is Status.skipped
    assert "sid" not in ctx.variables


def test_within_ms_over_budget_fails_with_both_numbers(ctx: RunContext) -> None:
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: slow
            within_ms: 50
            http: {path: /slow}
          - id: roomy
            within_ms: 60000
            http: {path: /items}
        """,
        ctx,
    )
    slow = steps["slow"].criterion
    assert slow.status is Status.failed
    assert slow.duration_ms is not None and slow.duration_ms >= 250
    assert f"took {slow.duration_ms:.0f} ms, over the 50 ms budget" in slow.evidence
    assert steps["roomy"].criterion.status is Status.passed
    assert "within the 60000 ms budget" in steps["roomy"].criterion.evidence


def test_request_timeout_fails(ctx: RunContext) -> None:
    ctx.step_timeout = 0.05
    step = one("id: s\ntitle: t\nsteps:\n  - id: slow\n    http: {path: /slow}\n", ctx)
    assert step.criterion.status is Status.failed
    assert "no response within 0.05 s" in step.criterion.evidence
    assert step.response_status is None


def test_api_down_fails_without_raising(ctx: RunContext) -> None:
    ctx.api_url = f"http://127.0.0.1:{free_port()}"
    steps = run(
        CREATE
        + """
    capture: {sid: $.id}
  - id: read
    http: {path: "/api/v1/sessions/${sid}"}
""",
        ctx,
    )
    create = steps["create"].criterion
    assert create.status is Status.failed
    assert f"request to {ctx.api_url} failed: " in create.evidence
    assert "onnect" in create.evidence  # ConnectError / connection refused
    assert steps["read"].criterion.status is Status.skipped


def test_auth_headers_are_sent_only_when_auth_is_true(ctx: RunContext) -> None:
    ctx.variables["token"] = "test-token"
    steps = run(
        """
        id: s
        title: t
        steps:
          - id: with_auth
            http: {path: /private}
            expect: {status: 200, json: {$.user: admin}}
          - id: without_auth
            http: {path: /private, auth: false}
            expect: {status: 401}
          - id: own_header
            http:
              path: /headers
              auth: false
              headers: {Authorization: "Bearer ${token}", X-Trace: "t-${token}"}
            expect: {json: {$.authorization: Bearer test-token, $.x_trace: t-test-token}}
          - id: no_header
            http: {path: /headers, auth: false}
            expect: {json: {$.authorization: null}}
        """,
        ctx,
    )
    for step in steps.values():
        assert step.criterion.status is Status.passed, step.criterion.evidence
    assert steps["no_header"].notes == []
    # The credentials themselves never go into the evidence.
    assert "test-token" not in steps["with_auth"].criterion.evidence


# --------------------------------------------------------------------------- logs


def _log_step(check: str, since: str = "suite") -> str:
    return f"id: s\ntitle: t\nsteps:\n  - id: logs\n    logs: {{since: {since}, {check}}}\n"


def test_must_not_match_hit_fails_with_the_offending_lines(ctx: RunContext, logs: FileLogs) -> None:
    logs.write("api", "old ERROR before the suite")
    ctx.api_start_marks = {"api": 0}
    logs.write("api", "INFO ok", *[f"ERROR boom {i}" for i in range(7)])
    step = one(_log_step("must_not_match: [ERROR]", since="api_start"), ctx)
    evidence = step.criterion.evidence
    assert step.criterion.status is Status.failed
    assert "9 lines read" in evidence
    assert (
        "8 lines match ERROR (first 5 shown): old ERROR before the suite | ERROR boom 0" in evidence
    )
    assert "ERROR boom 3" in evidence and "ERROR boom 4" not in evidence


def test_must_not_match_miss_passes_and_empty_log_says_zero_lines(
    ctx: RunContext, logs: FileLogs
) -> None:
    logs.write("database", "LOG: checkpoint starting")
    step = one(_log_step("source: database, must_not_match: ['^ERROR', 'error']"), ctx)
    assert step.criterion.status is Status.passed
    assert "database log since suite: 0 lines read; no line matches ^ERROR" in (
        step.criterion.evidence
    )


def test_must_match_needs_each_pattern_and_a_non_empty_log(ctx: RunContext, logs: FileLogs) -> None:
    step = one(_log_step("must_match: [started]"), ctx)
    assert step.criterion.status is Status.failed
    assert "started not found: 0 lines read" in step.criterion.evidence

    ctx.api_start_marks = {"api": 0}
    logs.write("api", "server started", "GET /items 200")
    step = one(_log_step("must_match: [started, 'GET /items', 'DELETE']", "api_start"), ctx)
    assert step.criterion.status is Status.failed
    assert step.criterion.evidence == (
        "api log since api_start: 2 lines read; FAILED: DELETE not found in 2 lines"
    )
    step = one(_log_step("must_match: [started, 'GET /items']", "api_start"), ctx)
    assert step.criterion.status is Status.passed
    assert "started found: server started; GET /items found: GET /items 200" in (
        step.criterion.evidence
    )


def test_since_step_reads_from_the_start_of_the_previous_step(
    ctx: RunContext, logs: FileLogs
) -> None:
    """The window covers the previous step, so a logs step can judge what that request logged."""
    path = str(logs.files["api"])
    steps = run(
        f"""
        id: s
        title: t
        steps:
          - id: first
            http: {{method: POST, path: /log, json: {{path: "{path}", line: ERROR first}}}}
          - id: second
            http: {{method: POST, path: /log, json: {{path: "{path}", line: INFO second}}}}
          - id: after_second
            logs: {{since: step, must_match: [INFO second], must_not_match: [ERROR]}}
          - id: after_logs
            logs: {{since: step, must_not_match: [ERROR]}}
          - id: third
            http: {{method: POST, path: /log, json: {{path: "{path}", line: ERROR third}}}}
          - id: after_third
            logs: {{since: step, must_not_match: [ERROR]}}
          - id: whole_suite
            logs: {{since: suite, must_not_match: [ERROR]}}
        """,
        ctx,
    )
    after_second = steps["after_second"].criterion
    assert after_second.status is Status.passed, after_second.evidence
    assert "1 line read" in after_second.evidence
    assert steps["after_logs"].criterion.status is Status.passed
    assert "0 lines read" in steps["after_logs"].criterion.evidence
    after_third = steps["after_third"].criterion
    assert after_third.status is Status.failed
    assert "1 line matches ERROR: ERROR third" in after_third.evidence
    whole = steps["whole_suite"].criterion
    assert whole.status is Status.failed
    assert "2 lines match ERROR: ERROR first | ERROR third" in whole.evidence


def test_missing_api_start_mark_fails(ctx: RunContext) -> None:
    step = one(_log_step("must_not_match: [ERROR]", since="api_start"), ctx)
    assert step.criterion.status is Status.failed
    assert "no mark for where the API started in the api log" in step.criterion.evidence


def test_variables_in_log_patterns_are_literal(ctx: RunContext, logs: FileLogs) -> None:
    ctx.variables["user"] = "a.b"
    ctx.api_start_marks = {"api": 0}
    logs.write("api", "login aXb")
    step = one(_log_step("must_match: ['login ${user}']", "api_start"), ctx)
    assert step.criterion.status is Status.failed
    logs.write("api", "login a.b")
    step = one(_log_step("must_match: ['login ${user}$']", "api_start"), ctx)
    assert step.criterion.status is Status.passed, step.criterion.evidence


def test_unreadable_log_is_a_failed_criterion_not_an_exception(
    ctx: RunContext, logs: FileLogs
) -> None:
    ctx.api_start_marks = {"api": 0}
    logs.files["api"].unlink()
    step = one(_log_step("must_not_match: [ERROR]", "api_start"), ctx)
    assert step.criterion.status is Status.failed
    assert "internal error: FileNotFoundError" in step.criterion.evidence


# --------------------------------------------------------------------------- sql


@pytest.fixture
def db(pg_sandbox: Any, ctx: RunContext) -> Iterator[str]:
    """A table of its own for each test, so tests never see each other's rows."""
    table = f"items_{uuid.uuid4().hex[:10]}"
    pg_sandbox.psql(
        f"CREATE TABLE {table} (id int PRIMARY KEY, name text NOT NULL, price numeric(8, 2),"
        " created timestamptz NOT NULL DEFAULT now(), tags text[], doc jsonb)"
    )
    pg_sandbox.psql(
        f"INSERT INTO {table} (id, name, price, tags, doc) VALUES"
        """ (1, 'ada', 12.50, '{a,b}', '{"k": [1, 2]}'), (2, 'bob', 3, NULL, NULL)"""
    )
    ctx.database_url = pg_sandbox.database_url
    yield table
    pg_sandbox.psql(f"DROP TABLE {table}")


def _sql_steps(*steps: str) -> str:
    return "id: s\ntitle: t\nsteps:\n" + "".join(textwrap.indent(s, "  ") for s in steps)


def test_sql_rows_and_values(ctx: RunContext, db: str) -> None:
    steps = run(
        _sql_steps(
            f"""- id: one
  sql: {{query: "SELECT * FROM {db} WHERE id = %(id)s", params: {{id: 1}}}}
  expect:
    rows: 1
    values: {{name: ada, price: 12.5, tags: [a, b], doc: {{k: [1, 2]}}}}
""",
            f"""- id: wrong
  sql: {{query: "SELECT name, price FROM {db} ORDER BY id"}}
  expect: {{rows: 1, values: {{name: bob, price: "12.50", nope: 1}}}}
""",
            f"""- id: none
  sql: {{query: "SELECT name FROM {db} WHERE id = 99"}}
  expect: {{values: {{name: ada}}}}
""",
            f"""- id: write
  sql: {{query: "UPDATE {db} SET name = 'cy' WHERE id = 2"}}
""",
        ),
        ctx,
    )
    one_row = steps["one"]
    assert one_row.criterion.status is Status.passed, one_row.criterion.evidence
    assert '1 row as expected; name = "ada"; price = 12.5' in one_row.criterion.evidence
    assert one_row.kind == "sql" and one_row.request.startswith("SQL: SELECT * FROM")
    row = one_row.rows[0]
    assert row["price"] == 12.5 and isinstance(row["created"], str) and "T" in row["created"]

    wrong = steps["wrong"].criterion
    assert wrong.status is Status.failed
    assert "2 rows, expected 1" in wrong.evidence
    assert 'name = "ada", expected "bob"' in wrong.evidence
    assert 'price = 12.5, expected "12.50"' in wrong.evidence
    assert "column nope not in the result (columns: name, price)" in wrong.evidence

    none = steps["none"].criterion
    assert none.status is Status.failed
    assert 'no row to compare (expected name = "ada")' in none.evidence

    assert steps["write"].criterion.status is Status.passed
    assert steps["write"].notes == ["no result set; 1 row affected"]


def test_sql_error_matches(ctx: RunContext, db: str) -> None:
    steps = run(
        _sql_steps(
            f"""- id: duplicate
  sql: {{query: "INSERT INTO {db} (id, name) VALUES (1, 'again')"}}
  expect: {{error_matches: "duplicate key|23505"}}
""",
            f"""- id: succeeded
  sql: {{query: "SELECT 1 FROM {db}"}}
  expect: {{error_matches: "duplicate key"}}
""",
            f"""- id: other_error
  sql: {{query: "INSERT INTO {db} (id) VALUES (5)"}}
  expect: {{error_matches: "duplicate key"}}
""",
            """- id: unexpected
  sql: {query: "SELECT * FROM no_such_table_here"}
""",
        ),
        ctx,
    )
    duplicate = steps["duplicate"].criterion
    assert duplicate.status is Status.passed, duplicate.evidence
    assert "failed as expected: 23505: duplicate key value" in duplicate.evidence
    assert steps["succeeded"].criterion.status is Status.failed
    assert "but the query succeeded" in steps["succeeded"].criterion.evidence
    other = steps["other_error"].criterion
    assert other.status is Status.failed and "23502" in other.evidence  # not-null violation
    unexpected = steps["unexpected"].criterion
    assert unexpected.status is Status.failed
    assert 'query failed: 42P01: relation "no_such_table_here" does not exist' in (
        unexpected.evidence
    )


def test_sql_capture_feeds_http_and_http_capture_feeds_sql(ctx: RunContext, db: str) -> None:
    steps = run(
        _sql_steps(
            f"""- id: pick
  sql: {{query: "SELECT name, id FROM {db} WHERE id = 1"}}
  capture: {{user: name, item: id}}
""",
            """- id: create
  http: {method: POST, path: /api/v1/sessions, json: {user: "${user}"}}
  expect: {json: {$.name: {matches: "^ada-"}}}
  capture: {count: $.count}
""",
            f"""- id: lookup
  sql:
    query: "SELECT id FROM {db} WHERE id = %(item)s AND price > %(count)s"
    params: {{item: "${{item}}", count: "${{count}}"}}
  expect: {{rows: 1, values: {{id: "${{item}}"}}}}
""",
            f"""- id: no_row
  sql: {{query: "SELECT id FROM {db} WHERE false"}}
  capture: {{gone: id}}
""",
            """- id: uses_gone
  sql: {query: "SELECT %(v)s AS v", params: {v: "${gone}"}}
""",
        ),
        ctx,
    )
    for step_id in ("pick", "create", "lookup"):
        assert steps[step_id].criterion.status is Status.passed, steps[step_id].criterion.evidence
    assert ctx.variables["item"] == 1
    assert "capture gone: no row returned" in steps["no_row"].criterion.evidence
    assert steps["uses_gone"].criterion.status is Status.skipped


def test_unreachable_database_fails_without_raising(ctx: RunContext) -> None:
    ctx.step_timeout = 2.0
    step = one('id: s\ntitle: t\nsteps:\n  - id: q\n    sql: {query: "SELECT 1"}\n', ctx)
    assert step.criterion.status is Status.failed
    assert "cannot connect to the database: " in step.criterion.evidence


@pytest.mark.parametrize("kind", [FileLogs, ClockLogs])
def test_a_traceback_written_after_the_step_starts_is_still_read(
    ctx: RunContext, tmp_path: Path, kind: type[FileLogs | ClockLogs]
) -> None:
    """The API answers 500 and writes its traceback a moment later: the log check waits until
    the log is quiet, so it sees the traceback."""
    logs = ctx.logs = kind(tmp_path)
    ctx.api_start_marks = {"api": 0}
    ctx.last_request = time.monotonic()  # a request has just been answered
    late = threading.Timer(0.03, logs.write, ("api", "Traceback (most recent call last):"))
    late.start()
    try:
        step = one(_log_step("must_not_match: [Traceback]", since="api_start"), ctx)
    finally:
        late.join()
    assert step.criterion.status is Status.failed
    assert "Traceback" in step.criterion.evidence


@pytest.mark.parametrize("kind", [FileLogs, ClockLogs])
def test_a_quiet_log_is_read_without_waiting_out_the_settle(
    ctx: RunContext, tmp_path: Path, kind: type[FileLogs | ClockLogs]
) -> None:
    """Nothing written after the last request: the check reads once the quiet time has
    passed, whether the log's marks are offsets or clock readings."""
    ctx.logs = kind(tmp_path)
    ctx.last_request = time.monotonic()
    start = time.monotonic()
    step = one(_log_step("must_not_match: [Traceback]"), ctx)
    assert step.criterion.status is Status.passed
    assert time.monotonic() - start < 1.0  # LOG_SETTLE is 2 s
