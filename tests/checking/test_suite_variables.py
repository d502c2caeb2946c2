"""An undefined `${name}` is a mistake in the suite: an error when it loads, not a reject.

At run time such a step can only be skipped, and a skipped required step rejects the change:
the builder would be blamed for the gate's own configuration.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.checking import RunContext, Suite, load_suites, run_suite
from bot.checking.auth import Credentials
from bot.checking.model import RUN_VARIABLES, variable_uses
from bot.judging.verdict import Status
from bot.policy.model import Auth
from bot.policy.yamlfile import ConfigError, load_model
from tests.helpers import free_port, git

GATEKEEPER = [sys.executable, "-m", "bot"]
NO_RUN_VARIABLE = "no run variable (there are: run_id) and no earlier step captures it"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def position(text: str, needle: str) -> str:
    """'line:col' of the first `needle` in `text`, counted from 1 as the messages count."""
    before = text[: text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - (before.rfind(chr(10)) + 1) + 1}"


def problems(*paths: Path, variables: frozenset[str] = RUN_VARIABLES) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_suites(list(paths), variables)
    return info.value.problems


def test_a_name_nothing_defines_is_an_error_at_its_use(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yml",
        """\
        id: s
        title: t
        steps:
          - id: read
            http: {path: "/sessions/${never_captured}"}
        """,
    )
    assert problems(path) == [f"{path}:5:18: ${{never_captured}} is undefined: {NO_RUN_VARIABLE}"]


def test_run_variables_and_earlier_captures_are_defined(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yml",
        """\
        id: s
        title: t
        steps:
          - id: create
            http: {method: POST, path: "/sessions/run-${run_id}"}
            capture: {sid: $.id}
          - id: row
            sql: {query: "SELECT 1 WHERE %(id)s IS NOT NULL", params: {id: "${sid}"}}
            capture: {state: state}
          - id: logs
            logs: {must_not_match: ["${sid} ${state} failed"]}
        """,
    )
    (suite,) = load_suites([path])
    assert [step.id for step in suite.steps] == ["create", "row", "logs"]


def test_a_later_capture_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yml",
        """\
        id: s
        title: t
        steps:
          - id: early
            http: {path: "/x/${later}"}
          - id: itself
            http: {path: "/y/${own}"}
            capture: {own: $.id}
          - id: define
            http: {path: /items}
            capture: {later: "$.items[0].id"}
        """,
    )
    assert problems(path) == [
        f"{path}:5:18: ${{later}} is undefined: step 'define' captures it, but only after this use",
        f"{path}:7:18: ${{own}} is undefined: step 'itself' captures it, but only after this use",
    ]


def test_suites_share_captures_in_the_order_they_run(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a-create.yml",
        """\
        id: create
        title: t
        steps:
          - {id: create, http: {method: POST, path: /sessions}, capture: {sid: $.id}}
        """,
    )
    second = write(
        tmp_path / "b-read.yml",
        """\
        id: read
        title: t
        steps:
          - {id: read, http: {path: "/sessions/${sid}"}}
        """,
    )
    assert [suite.id for suite in load_suites([tmp_path])] == ["create", "read"]
    assert problems(second, first) == [
        f"{second}:4:29: ${{sid}} is undefined: suite 'create' captures it, but runs after this one"
    ]


def test_suites_after_one_that_did_not_load_are_not_judged_on_variables(tmp_path: Path) -> None:
    # The broken suite may be the one that captures `sid`: blaming its users would mislead.
    broken = write(tmp_path / "a.yml", "id: a\ntitle: t\nsteps: [{id: x, htp: {}}]\n")
    write(tmp_path / "b.yml", 'id: b\ntitle: t\nsteps:\n  - {id: y, http: {path: "/${sid}"}}\n')
    (problem,) = problems(tmp_path)
    assert problem.startswith(f"{broken}:3:")


def test_the_caller_says_which_run_variables_exist(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yml",
        'id: s\ntitle: t\nsteps:\n  - {id: a, http: {path: "/${token}"}}\n',
    )
    assert load_suites([path], variables={"token"})
    (problem,) = problems(path)
    assert "${token} is undefined: no run variable (there are: run_id)" in problem


# Every place the runner expands `${name}`, each with a name of its own.
EVERY_PLACE = """\
id: every
title: Every place a variable is expanded
steps:
  - id: http
    http:
      method: POST
      path: "/a/${v_path}"
      headers: {X-One: "${v_header}"}
      json: {deep: [{x: "${v_body}"}], "key_${not_expanded}": 1}
    expect:
      json:
        $.a: "${v_literal}"
        $.b: {equals: ["${v_equals}"], contains: "${v_contains}", matches: "^${v_matches}"}
        $.c: {type: string}
      body_matches: "${v_body_matches}"
  - id: form
    http: {method: POST, path: /f, form: {a: "${v_form}", many: [x, "${v_form_item}"]}}
  - id: raw
    http: {method: POST, path: /r, body: "<x>${v_raw}</x>", content_type: application/xml}
  - id: sql
    sql: {query: "SELECT %(p)s AS p", params: {p: {nested: "${v_param}"}}}
    expect: {values: {p: "${v_value}"}}
  - id: sql_error
    sql: {query: "SELECT x", params: {}}
    expect: {error_matches: "${v_error}"}
  - id: logs
    logs: {must_not_match: ["${v_not}"], must_match: ["${v_must}"]}
"""


def test_every_place_the_runner_expands_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path / "every.yml", EVERY_PLACE)
    found = problems(path)
    # Each is reported where its string starts.
    strings = {
        "v_path": '"/a/${v_path}"',
        "v_header": '"${v_header}"',
        "v_body": '"${v_body}"',
        "v_literal": '"${v_literal}"',
        "v_equals": '"${v_equals}"',
        "v_contains": '"${v_contains}"',
        "v_matches": '"^${v_matches}"',
        "v_body_matches": '"${v_body_matches}"',
        "v_form": '"${v_form}"',
        "v_form_item": '"${v_form_item}"',
        "v_raw": '"<x>${v_raw}</x>"',
        "v_param": '"${v_param}"',
        "v_value": '"${v_value}"',
        "v_error": '"${v_error}"',
        "v_not": '"${v_not}"',
        "v_must": '"${v_must}"',
    }
    expected = {name: position(EVERY_PLACE, text) for name, text in strings.items()}
    assert found == [
        f"{path}:{where}: ${{{name}}} is undefined: {NO_RUN_VARIABLE}"
        for name, where in expected.items()
    ]


class _NoLogs:
    """A log reader with empty logs: the steps here are skipped before any log is read."""

    def log_mark(self, source: str) -> int:
        return 0

    def logs(self, source: str, since: int = 0) -> str:
        return ""


def test_the_load_time_check_sees_what_the_runner_expands() -> None:
    """If the runner learns a new place to expand, variable_uses must learn it too."""
    suite = load_model("every.yml", Suite, text=EVERY_PLACE)
    ctx = RunContext(
        api_url=f"http://127.0.0.1:{free_port()}",
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        logs=_NoLogs(),
        credentials=Credentials(Auth(), "test", {}),
    )
    result = run_suite(suite, ctx)
    for step, outcome in zip(suite.steps, result.steps, strict=True):
        assert outcome.criterion.status is Status.skipped, outcome.criterion.evidence
        missed = set(re.findall(r"\$\{(\w+)\} is undefined", outcome.criterion.evidence))
        assert missed == {name for name, _ in variable_uses(step)}, outcome.criterion.evidence


def test_policy_check_and_validate_end_in_exit_2(tmp_path: Path) -> None:
    """The CLI's policy check reports it; a validation ends in `error`, never in reject."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(
        repo / ".github" / "gatekeeper.yml",
        "migrations: {mode: directory, directory: migrations}\nsuites: [../checks]\n",
    )
    suite = write(
        repo / "checks" / "s.yml",
        """\
        id: s
        title: t
        steps:
          - id: read
            sql: {query: "SELECT %(id)s", params: {id: "${never_captured}"}}
        """,
    )
    write(repo / "migrations" / "001.sql", "CREATE TABLE t (id int);\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "builder/x")
    write(repo / "migrations" / "002.sql", "CREATE TABLE u (id int);\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "head")
    message = f"{suite}:5:48: ${{never_captured}} is undefined"

    checked = subprocess.run(
        [*GATEKEEPER, "policy", "check", str(repo / ".github" / "gatekeeper.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 2, checked.stderr
    assert message in checked.stderr

    validated = subprocess.run(
        [
            *GATEKEEPER,
            *("validate", "--repo", str(repo), "--base", "main", "--head", "builder/x"),
            *("--json", "--out", str(tmp_path / "out")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert validated.returncode == 2, validated.stderr
    verdict = json.loads(validated.stdout)
    assert verdict["decision"] == "error"
    assert "${never_captured} is undefined" in json.dumps(verdict)
