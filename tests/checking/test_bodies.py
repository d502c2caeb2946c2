"""Http steps with every body a real API takes: a form, a raw body, multipart files.

The server decodes what it received with the standard library's own parsers (urllib for a
form, email for multipart), independent of the client that encoded it, and answers with what
it saw, so each test asserts on what really went over the wire.
"""

from __future__ import annotations

import email.parser
import email.policy
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from fastapi import FastAPI, Request

from bot.checking import RunContext, StepResult, load_suites, run_suite
from bot.checking.auth import Credentials
from bot.judging.verdict import Status
from bot.policy.model import Auth
from bot.policy.yamlfile import ConfigError
from tests.helpers import free_port, serving


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        body = (await request.body()).decode()
        return {"content_type": request.headers["content-type"], "fields": parse_qs(body)}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, Any]:
        return {
            "content_type": request.headers["content-type"],
            "body": (await request.body()).decode(),
        }

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            head + await request.body()
        )
        parts = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            parts[name] = {
                "filename": part.get_filename(),
                "content_type": part.get_content_type() if part.get_filename() else None,
                "content": part.get_payload(decode=True).decode(),
            }
        return {"multipart": message.get_content_type() == "multipart/form-data", "parts": parts}

    return app


class _NoLogs:
    def log_mark(self, source: str) -> int:
        return 0

    def logs(self, source: str, since: int = 0) -> str:
        return ""


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    with serving(_app()) as url:
        yield url


@pytest.fixture
def ctx(api_url: str) -> RunContext:
    return RunContext(
        api_url=api_url,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        logs=_NoLogs(),
        credentials=Credentials(Auth(), "test", {}),
        variables={"run_id": "abc12345"},
    )


def write_suite(directory: Path, text: str, name: str = "suite.yml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def run(path: Path, ctx: RunContext) -> dict[str, StepResult]:
    (suite,) = load_suites([path])
    return {s.criterion.id.split("/", 1)[1]: s for s in run_suite(suite, ctx).steps}


def passed(steps: dict[str, StepResult]) -> None:
    for step in steps.values():
        assert step.criterion.status is Status.passed, step.criterion.evidence


def test_form_is_urlencoded_with_variables_expanded(tmp_path: Path, ctx: RunContext) -> None:
    steps = run(
        write_suite(
            tmp_path,
            """
            id: forms
            title: a login form
            steps:
              - id: form
                http:
                  method: POST
                  path: /form
                  form: {username: "admin-${run_id}", scope: [read, write], remember: true}
                expect:
                  json:
                    $.content_type: application/x-www-form-urlencoded
                    $.fields.username: [admin-abc12345]
                    $.fields.scope: [read, write]
                    $.fields.remember: ["true"]
            """,
        ),
        ctx,
    )
    passed(steps)


def test_body_is_sent_as_written_with_its_content_type(tmp_path: Path, ctx: RunContext) -> None:
    steps = run(
        write_suite(
            tmp_path,
            """
            id: raw
            title: an XML body
            steps:
              - id: xml
                http:
                  method: POST
                  path: /raw
                  body: "<order run='${run_id}'>1 & 2</order>"
                  content_type: application/xml; charset=utf-8
                expect:
                  json:
                    $.content_type: application/xml; charset=utf-8
                    $.body: "<order run='abc12345'>1 & 2</order>"
            """,
        ),
        ctx,
    )
    passed(steps)


def test_files_are_multipart_parts_with_their_names(tmp_path: Path, ctx: RunContext) -> None:
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "avatar.txt").write_text("pixels\n")
    steps = run(
        write_suite(
            tmp_path,
            """
            id: upload
            title: files and fields
            steps:
              - id: upload
                http:
                  method: POST
                  path: /upload
                  form: {title: "shot ${run_id}"}
                  files:
                    avatar: {path: fixtures/avatar.txt}
                    report: {content: "a,b\\n1,2\\n", filename: r.csv, content_type: text/csv}
                    renamed: {path: fixtures/avatar.txt, filename: me.png}
                expect:
                  json:
                    $.multipart: true
                    $.parts.title:
                      equals: {filename: null, content_type: null, content: shot abc12345}
                    $.parts.avatar.filename: avatar.txt
                    $.parts.avatar.content_type: text/plain
                    $.parts.avatar.content: "pixels\\n"
                    $.parts.report:
                      equals: {filename: r.csv, content_type: text/csv, content: "a,b\\n1,2\\n"}
                    $.parts.renamed.filename: me.png
                    $.parts.renamed.content_type: image/png
            """,
        ),
        ctx,
    )
    passed(steps)
    assert "sent files: avatar (avatar.txt), report (r.csv), renamed (me.png)" in (
        steps["upload"].notes
    )


def test_a_file_gone_since_loading_fails_the_step(tmp_path: Path, ctx: RunContext) -> None:
    fixture = tmp_path / "a.txt"
    fixture.write_text("x")
    (suite,) = load_suites(
        [
            write_suite(
                tmp_path,
                """
                id: gone
                title: t
                steps:
                  - id: upload
                    http: {method: POST, path: /upload, files: {a: {path: a.txt}}}
                """,
            )
        ]
    )
    fixture.unlink()
    (step,) = run_suite(suite, ctx).steps
    assert step.criterion.status is Status.failed
    assert "cannot read a file to send" in step.criterion.evidence


# --------------------------------------------------------------------------- load-time errors


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_suites([path])
    return info.value.problems


STEP = """\
id: s
title: t
steps:
  - id: ok
    http: {path: /}
  - id: bad
    http:
      method: POST
      path: /x
{body}
"""


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        (
            "      json: {a: 1}\n      form: {a: '1'}",
            "6:5: steps.1",
            "step 'bad' gives json and form",
        ),
        (
            "      body: x\n      content_type: text/plain\n      files: {f: {content: x, "
            "filename: f}}",
            "6:5: steps.1",
            "step 'bad' gives body and files",
        ),
        ("      body: x", "6:5: steps.1", "step 'bad': 'body' needs 'content_type'"),
        (
            "      content_type: text/plain",
            "6:5: steps.1",
            "step 'bad': 'content_type' needs 'body'",
        ),
        (
            "      body: x\n      content_type: text/plain\n      headers: {content-type: a/b}",
            "6:5: steps.1",
            "step 'bad' sets the content type twice",
        ),
        (
            "      files: {f: {content: x}}",
            "10:18: steps.1.http.files.f",
            "'content' needs 'filename'",
        ),
        (
            "      files: {f: {path: a, content: x, filename: f}}",
            "10:18: steps.1.http.files.f",
            "exactly one of 'path' and 'content'",
        ),
        (
            "      files: {f: {path: ../secret}}",
            "10:18: steps.1.http.files.f",
            "stay in its directory",
        ),
        ("      files: {f: {path: /etc/passwd}}", "10:18: steps.1.http.files.f", "not absolute"),
    ],
)
def test_bad_bodies_name_the_step_and_line(
    tmp_path: Path, body: str, where: str, message: str
) -> None:
    path = write_suite(tmp_path, STEP.replace("{body}", body))
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:{where}"), problem
    assert message in problem


def test_files_must_exist_next_to_the_suite(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host file")
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "link.txt").symlink_to(outside)
    path = write_suite(
        checks,
        STEP.replace("{body}", "      files: {a: {path: missing.txt}, b: {path: link.txt}}"),
    )
    found = problems(path)
    assert found == [
        f"{path}:10:25: no file 'missing.txt' next to suite.yml",
        f"{path}:10:49: 'link.txt' leads out of the suite's directory",
    ], found
