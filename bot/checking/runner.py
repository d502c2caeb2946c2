"""Run check suites against the sandbox; every step becomes one criterion of the Verdict.

Fail closed: a step passes only when it ran, produced data and every expectation held.
An unreachable API, a capture that never happened or an unexpected exception is a failed
or skipped criterion, never a passed one, and never an exception out of `run_suite`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import psycopg
from jsonpath_ng import JSONPath
from jsonpath_ng.jsonpath import Child, Fields, Index, Root, This
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from bot.checking.auth import Credentials, LoginFailed
from bot.checking.model import (
    RUN_VARIABLES,
    VARIABLE,
    HttpRequest,
    HttpStep,
    JsonExpect,
    LogsStep,
    SqlStep,
    Suite,
    compile_jsonpath,
    variable_uses,
)
from bot.judging.verdict import Criterion, Status
from bot.policy.yamlfile import ConfigError, Located, load_located
from bot.sandbox import loopback

EXCERPT_CHARS = 2000
MAX_ROWS = 20
MAX_LOG_LINES = 5
# Evidence is read in a table of criteria: long enough for the compared values, no longer.
EVIDENCE_CHARS = 1500
# A log is read once it has had no new line for LOG_QUIET s, or after LOG_SETTLE s at most.
LOG_QUIET = 0.05
LOG_SETTLE = 2.0
LOG_POLL = 0.01
SHORT_CHARS = 300

StepKind = Literal["http", "sql", "logs"]
AnyStep = HttpStep | SqlStep | LogsStep


class LogReader(Protocol):
    def log_mark(self, source: str) -> int: ...

    def logs(self, source: str, since: int = 0) -> str: ...


@dataclass
class RunContext:
    api_url: str
    database_url: str
    logs: LogReader
    # Asked per suite, against api_url; sent when a step's http.auth is true (the default).
    credentials: Credentials
    step_timeout: float = 10.0  # seconds, per request or query
    # Log positions where the head API started, per source ("since: api_start").
    api_start_marks: dict[str, int] = field(default_factory=dict)
    # Initial variables; captures add to them, so later suites can use earlier captures.
    variables: dict[str, Any] = field(default_factory=dict)
    # When the last HTTP request ended (time.monotonic): logs settle after it (`_settle`).
    last_request: float = 0.0


class StepResult(BaseModel):
    criterion: Criterion
    kind: StepKind
    request: str = Field("", description="e.g. 'POST /api/v1/sessions', 'SQL: select ...'.")
    response_status: int | None = None
    response_excerpt: str = Field("", description="Response body or log tail, at most 2000 chars.")
    rows: list[dict[str, Any]] = Field(default_factory=list, description="First 20 SQL rows.")
    duration_ms: float | None = None
    notes: list[str] = Field(default_factory=list)


class SuiteResult(BaseModel):
    suite_id: str
    title: str
    kind: str
    bug_id: str | None = None
    steps: list[StepResult] = Field(default_factory=list)
    login_error: str | None = Field(
        None, description="Why logging in failed; then no step ran (`<suite id>/login`)."
    )


# --------------------------------------------------------------------------- loading


def load_suites(paths: Sequence[Path], variables: Iterable[str] = RUN_VARIABLES) -> list[Suite]:
    """Load every suite, reporting the problems of all files at once so one run fixes them all.

    A `${name}` that neither a run variable (`variables`) nor an earlier step defines is a
    mistake in the suite, so it is a ConfigError here, with its line: at run time it could
    only skip the step, and a skipped required step would reject the change for it. Suites
    run in the order given and share captures, so a suite may use an earlier one's.
    """
    problems: list[str] = []
    files = _suite_files([Path(p) for p in paths], problems)
    loaded: list[Located[Suite]] = []
    origin: dict[str, Located[Suite]] = {}
    # Suites after one that did not load may use its captures, which are unknown.
    known = None
    for file in files:
        try:
            located = load_located(file, Suite)
        except ConfigError as exc:
            problems.extend(exc.problems)
            known = len(loaded) if known is None else known
            continue
        suite_id = located.value.id
        if suite_id in origin:
            problems.append(
                f"{located.position(('id',), key=True)}: duplicate suite id '{suite_id}', "
                f"also in {origin[suite_id].position(('id',), key=True)}"
            )
            continue
        origin[suite_id] = located
        problems.extend(_resolve_files(file, located))
        loaded.append(located)
    problems.extend(_undefined_variables(loaded[:known], frozenset(variables)))
    if problems:
        raise ConfigError(", ".join(str(p) for p in paths), problems)
    return [located.value for located in loaded]


def _suite_files(paths: list[Path], problems: list[str]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [*path.glob("*.yml"), *path.glob("*.yaml")]
            suites = sorted((f for f in found if f.is_file()), key=lambda f: f.name)
            if not suites:
                # Named but empty: the checks it was meant to hold would silently not run.
                problems.append(f"{path}: no suite files (*.yml, *.yaml) in this directory")
            files.extend(suites)
        elif path.exists():
            files.append(path)  # a FIFO or a device is refused by the loader, unread
        else:
            problems.append(f"{path}: no such file or directory")
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def _resolve_files(file: Path, located: Located[Suite]) -> list[str]:
    """Point each `files:` path at the file it names, found next to the suite file.

    Checked now, with the line, rather than failing the step: a missing fixture is a mistake
    in the suite. The file must stay in the suite's directory (a symbolic link out of it is
    refused too): a suite must not send the API under test a file of the gate's host.
    """
    problems: list[str] = []
    directory = file.parent.resolve()
    for index, step in enumerate(located.value.steps):
        if not isinstance(step, HttpStep) or not step.http.files:
            continue
        for name, part in step.http.files.items():
            if part.path is None:
                continue
            where = located.position(("steps", index, "http", "files", name, "path"))
            target = (directory / part.path).resolve()
            if not target.is_relative_to(directory):
                problems.append(f"{where}: '{part.path}' leads out of the suite's directory")
            elif not target.is_file():
                problems.append(f"{where}: no file '{part.path}' next to {file.name}")
            else:
                part.path = str(target)
    return problems


def _undefined_variables(loaded: list[Located[Suite]], known: frozenset[str]) -> list[str]:
    """Each `${name}` used before anything defines it, once per step, at its first use."""
    problems: list[str] = []
    defined = set(known)
    for position, located in enumerate(loaded):
        steps = located.value.steps
        for index, step in enumerate(steps):
            reported: set[str] = set()
            for name, loc in variable_uses(step):
                if name in defined or name in reported:
                    continue
                reported.add(name)
                why = _why_undefined(name, steps[index:], loaded[position + 1 :], known)
                where = located.position(("steps", index, *loc))
                problems.append(f"{where}: ${{{name}}} is undefined: {why}")
            if not isinstance(step, LogsStep):
                defined.update(step.capture)
    return problems


def _why_undefined(
    name: str, rest: list[AnyStep], later: list[Located[Suite]], known: frozenset[str]
) -> str:
    step = next((s for s in rest if not isinstance(s, LogsStep) and name in s.capture), None)
    if step is not None:
        return f"step '{step.id}' captures it, but only after this use"
    suite = next(
        (
            located.value
            for located in later
            if any(not isinstance(s, LogsStep) and name in s.capture for s in located.value.steps)
        ),
        None,
    )
    if suite is not None:
        return f"suite '{suite.id}' captures it, but runs after this one"
    run = ", ".join(sorted(known)) or "none"
    return f"no run variable (there are: {run}) and no earlier step captures it"


# --------------------------------------------------------------------------- running


def run_suite(suite: Suite, ctx: RunContext) -> SuiteResult:
    """Log in if the suite's requests need it, then run every step in order; a failed step
    does not stop the ones after it. A failed login is the criterion `<suite id>/login` and
    no step runs: each would fail for want of credentials, not for what it checks."""
    run = _SuiteRun(suite, ctx)
    result = SuiteResult(suite_id=suite.id, title=suite.title, kind=suite.kind, bug_id=suite.bug_id)
    try:
        login = run.log_in()
        if login is not None:
            result.login_error = login.criterion.evidence
            result.steps = [login, *(_not_run(suite, step, "login failed") for step in suite.steps)]
        else:
            result.steps = [run.step(step) for step in suite.steps]
    finally:
        run.close()
    return result


@dataclass
class _Observed:
    """What one step saw, collected before it is turned into a criterion."""

    kind: StepKind
    title: str
    request: str
    head: str = ""  # e.g. 'POST /api/v1/sessions -> 201 in 14 ms'
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: str = ""
    detail: str = ""  # short excerpt appended to the evidence of a failure
    response_status: int | None = None
    excerpt: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    captured: dict[str, Any] = field(default_factory=dict)


class _Expander:
    """Replaces `${name}` and remembers every name that had no value, so the step can skip."""

    def __init__(self, variables: dict[str, Any]):
        self.variables = variables
        self.missing: list[str] = []

    def text(self, text: str, regex: bool = False) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.variables:
                self._miss(name)
                return match.group(0)
            value = _as_text(self.variables[name])
            # A captured value is data, not a pattern: '.' in a name must match only '.'.
            return re.escape(value) if regex else value

        return VARIABLE.sub(replace, text)

    def value(self, value: Any) -> Any:
        """Like `text`, but a string that is exactly one `${name}` keeps the value's JSON type."""
        if isinstance(value, str):
            whole = VARIABLE.fullmatch(value)
            if whole and whole.group(1) in self.variables:
                return self.variables[whole.group(1)]
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        return value

    def _miss(self, name: str) -> None:
        if name not in self.missing:
            self.missing.append(name)


class _SuiteRun:
    def __init__(self, suite: Suite, ctx: RunContext):
        self.suite = suite
        self.ctx = ctx
        self.sources = sorted({s.logs.source for s in suite.steps if isinstance(s, LogsStep)})
        self.suite_marks = self._marks()
        # Marks taken as the previous step and the current step started: "since: step" reads
        # from the start of the previous step, so its window holds what that step caused.
        self.previous_marks = self.current_marks = self.suite_marks
        # Why a variable is undefined: the step that should have captured it, and how it ended.
        self.uncaptured: dict[str, tuple[str, Status]] = {}
        self.later_capturer = {
            name: step.id
            for step in reversed(suite.steps)
            if not isinstance(step, LogsStep)
            for name in step.capture
        }
        self._client: httpx.Client | None = None
        self._db: psycopg.Connection | None = None
        self.auth_headers: dict[str, str] = {}

    def log_in(self) -> StepResult | None:
        """Get the suite's credentials from `ctx.credentials`; the failed criterion if a
        login gave none. Only a suite with a request that sends them asks for them."""
        if not any(isinstance(s, HttpStep) and s.http.auth for s in self.suite.steps):
            return None
        login = self.ctx.credentials.login
        request = f"{login.method} {login.path}" if login else "credentials"
        obs = _Observed("http", f"log in: {request}", request if login else "")
        start = time.perf_counter()
        try:
            self.auth_headers = self.ctx.credentials.headers(self.ctx.api_url, self._http_client())
            return None
        except LoginFailed as exc:
            obs.failed.append(str(exc))
            obs.response_status, obs.excerpt = exc.status, exc.body
        except Exception as exc:  # fail closed: no credentials, no steps
            obs.failed.append(f"internal error: {type(exc).__name__}: {_short(str(exc))}")
        finally:
            self.ctx.last_request = time.monotonic()
        obs.duration_ms = _since_ms(start)
        return _result_of(self.suite, "login", True, obs)

    def close(self) -> None:
        if self._client is not None:
            with suppress(Exception):
                self._client.close()
        if self._db is not None:
            with suppress(Exception):
                self._db.close()

    def step(self, step: AnyStep) -> StepResult:
        self.previous_marks, self.current_marks = self.current_marks, self._marks()
        obs = _observed(step)
        try:
            if isinstance(step, HttpStep):
                self._http(step, obs)
            elif isinstance(step, SqlStep):
                self._sql(step, obs)
            else:
                self._logs(step, obs)
        except Exception as exc:
            obs.failed.append(f"internal error: {type(exc).__name__}: {_short(str(exc))}")
        _check_budget(step.within_ms, obs)
        result = _result_of(self.suite, step.id, step.required, obs)
        self._record_captures(step, obs, result.criterion.status)
        return result

    # ---- variables

    def _record_captures(self, step: AnyStep, obs: _Observed, status: Status) -> None:
        if isinstance(step, LogsStep):
            return
        for name in step.capture:
            if name in obs.captured:
                self.ctx.variables[name] = obs.captured[name]
                self.uncaptured.pop(name, None)
            else:
                # A value left over from an earlier suite would be stale: drop it.
                self.ctx.variables.pop(name, None)
                self.uncaptured[name] = (step.id, status)

    def _skip_reason(self, names: list[str]) -> str:
        reasons = []
        for name in names:
            if name in self.uncaptured:
                step_id, status = self.uncaptured[name]
                reasons.append(
                    f"${{{name}}} is undefined: step '{step_id}' should have captured it "
                    f"({status.value})"
                )
            elif name in self.later_capturer:
                reasons.append(
                    f"${{{name}}} is undefined: only the later step "
                    f"'{self.later_capturer[name]}' captures it"
                )
            else:
                reasons.append(f"${{{name}}} is undefined: no run variable or step defines it")
        return "; ".join(reasons)

    # ---- http

    def _http(self, step: HttpStep, obs: _Observed) -> None:
        req, expect = step.http, step.expect
        ex = _Expander(self.ctx.variables)
        path = ex.text(req.path)
        headers = dict(self.auth_headers) if req.auth else {}
        if req.content_type is not None:
            headers["Content-Type"] = req.content_type
        headers.update({name: ex.text(value) for name, value in req.headers.items()})
        body = _body(req, ex)
        paths = {p: _expand_expectation(e, ex) for p, e in expect.json_paths.items()}
        body_pattern = ex.text(expect.body_matches, regex=True) if expect.body_matches else None
        if ex.missing:
            obs.skipped = self._skip_reason(ex.missing)
            return
        obs.request = f"{req.method} {path}"
        if req.auth and self.auth_headers:
            obs.notes.append(f"sent auth headers: {', '.join(sorted(self.auth_headers))}")
        try:
            files = _files(req)
        except OSError as exc:
            obs.failed.append(f"cannot read a file to send: {_error_text(exc)}")
            return
        if files:
            obs.notes.append(
                "sent files: " + ", ".join(f"{name} ({part[0]})" for name, part in files.items())
            )

        start = time.perf_counter()
        try:
            response = self._http_client().request(
                req.method, path, headers=headers, files=files, **body
            )
        except httpx.TimeoutException as exc:
            self.ctx.last_request = time.monotonic()
            obs.duration_ms = _since_ms(start)
            obs.head = f"{obs.request} -> no response"
            obs.failed.append(
                f"no response within {self.ctx.step_timeout:g} s ({type(exc).__name__})"
            )
            return
        except httpx.HTTPError as exc:
            obs.duration_ms = _since_ms(start)
            obs.head = f"{obs.request} -> no response"
            obs.failed.append(f"request to {self.ctx.api_url} failed: {_error_text(exc)}")
            return
        self.ctx.last_request = time.monotonic()
        obs.duration_ms = _since_ms(start)
        obs.response_status = response.status_code
        obs.head = f"{obs.request} -> {response.status_code} in {obs.duration_ms:.0f} ms"
        data, is_json = _parse_json(response)
        obs.excerpt = _excerpt(data, response.text, is_json, EXCERPT_CHARS)
        obs.detail = "body: " + _excerpt(data, response.text, is_json, SHORT_CHARS, pretty=False)

        _check_status(expect.status, response.status_code, obs)
        if body_pattern is not None:
            _check_body(body_pattern, response.text, obs)
        if not (paths or step.capture):
            return
        if not is_json:
            content_type = response.headers.get("content-type", "none")
            obs.failed.append(f"response is not JSON (content-type: {content_type})")
            return
        for json_path, expectation in paths.items():
            _check_json_path(json_path, expectation, data, obs)
        for name, json_path in step.capture.items():
            _capture_json(name, json_path, data, obs)

    def _http_client(self) -> httpx.Client:
        if self._client is None:
            self._client = loopback.client(base_url=self.ctx.api_url, timeout=self.ctx.step_timeout)
        return self._client

    # ---- sql

    def _sql(self, step: SqlStep, obs: _Observed) -> None:
        expect = step.expect
        ex = _Expander(self.ctx.variables)
        params = {name: ex.value(value) for name, value in step.sql.params.items()}
        values = {column: ex.value(value) for column, value in expect.values.items()}
        error_pattern = ex.text(expect.error_matches, regex=True) if expect.error_matches else None
        if ex.missing:
            obs.skipped = self._skip_reason(ex.missing)
            return
        try:
            conn = self._connection()
        except psycopg.Error as exc:
            obs.head = "SQL not run"
            obs.failed.append(f"cannot connect to the database: {_error_text(exc)}")
            return

        start = time.perf_counter()
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(step.sql.query, params or None)
                has_result = cur.description is not None
                rows = cur.fetchall() if has_result else []
                affected = cur.rowcount
        except psycopg.Error as exc:
            obs.duration_ms = _since_ms(start)
            _sql_error(exc, error_pattern, obs)
            return
        obs.duration_ms = _since_ms(start)
        rows = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
        obs.rows = rows[:MAX_ROWS]
        obs.head = f"SQL -> {_n(len(rows), 'row')} in {obs.duration_ms:.0f} ms"
        obs.detail = "rows: " + _short(json.dumps(rows[:3], ensure_ascii=False), SHORT_CHARS)
        if len(rows) > MAX_ROWS:
            obs.notes.append(f"{len(rows)} rows returned, first {MAX_ROWS} kept")
        if not has_result:
            obs.notes.append(f"no result set; {_n(affected, 'row')} affected")
        if error_pattern is not None:
            obs.failed.append(
                f"expected an error matching {error_pattern!r}, but the query succeeded"
            )
            return
        _check_rows(expect.rows, rows, values, obs)
        _capture_columns(step.capture, rows, obs)
        if not (obs.passed or obs.failed):
            obs.passed.append("query succeeded")

    def _connection(self) -> psycopg.Connection:
        if self._db is None or self._db.closed or self._db.broken:
            timeout = self.ctx.step_timeout
            self._db = psycopg.connect(
                self.ctx.database_url, autocommit=True, connect_timeout=max(1, round(timeout))
            )
            # A hanging query must end as a failed step, not hang the gate.
            self._db.execute(
                "SELECT set_config('statement_timeout', %s, false)", [f"{int(timeout * 1000)}ms"]
            )
        return self._db

    # ---- logs

    def _logs(self, step: LogsStep, obs: _Observed) -> None:
        check = step.logs
        ex = _Expander(self.ctx.variables)
        must_not = [ex.text(p, regex=True) for p in check.must_not_match]
        must = [ex.text(p, regex=True) for p in check.must_match]
        if ex.missing:
            obs.skipped = self._skip_reason(ex.missing)
            return
        since = self._since(check.source, check.since, obs)
        if since is None:
            return
        start = time.perf_counter()
        self._settle(check.source)
        text = self.ctx.logs.logs(check.source, since)
        obs.duration_ms = _since_ms(start)
        lines = text.splitlines()
        obs.head = f"{check.source} log since {check.since}: {_n(len(lines), 'line')} read"
        obs.excerpt = text[-EXCERPT_CHARS:]
        for pattern in must_not:
            _check_absent(pattern, lines, obs)
        for pattern in must:
            _check_present(pattern, lines, obs)

    def _settle(self, source: str) -> None:
        """Wait until the log has had no new line for LOG_QUIET seconds since the last request
        ended (at most LOG_SETTLE): an API writes its traceback after the 500 has reached the
        client, and a check that read at once would pass over it. After a query or a pause
        the quiet time has passed already, and the check reads after one look.

        A new line is the text since the first look growing, not the mark moving: a mark is
        only a position, and the containers sandbox's is a clock reading, new at every call,
        so each of its log checks waited the whole LOG_SETTLE (2 s)."""
        deadline = time.monotonic() + LOG_SETTLE
        start, size, quiet_since = self.ctx.logs.log_mark(source), 0, self.ctx.last_request
        while time.monotonic() < deadline:
            time.sleep(LOG_POLL)
            now = len(self.ctx.logs.logs(source, start))
            if now != size:
                size, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= LOG_QUIET:
                return

    def _since(self, source: str, since: str, obs: _Observed) -> int | None:
        """The log position to read from, or None with the reason recorded as a failure."""
        if since == "api_start":
            mark: int | Exception | None = self.ctx.api_start_marks.get(source)
            if mark is None:
                obs.failed.append(f"no mark for where the API started in the {source} log")
        else:
            mark = (self.suite_marks if since == "suite" else self.previous_marks).get(source)
            if isinstance(mark, Exception):
                obs.failed.append(f"could not mark the {source} log: {_error_text(mark)}")
        if isinstance(mark, int):
            return mark
        obs.head = f"{source} log not read"
        return None

    def _marks(self) -> dict[str, int | Exception]:
        marks: dict[str, int | Exception] = {}
        for source in self.sources:
            try:
                marks[source] = self.ctx.logs.log_mark(source)
            except Exception as exc:
                marks[source] = exc
        return marks


# --------------------------------------------------------------------------- results


def _observed(step: AnyStep) -> _Observed:
    if isinstance(step, HttpStep):
        request = f"{step.http.method} {step.http.path}"
        return _Observed("http", step.title or request, request)
    if isinstance(step, SqlStep):
        request = f"SQL: {_short(' '.join(step.sql.query.split()), 200)}"
        return _Observed("sql", step.title or _short(request, 70), request)
    request = f"logs {step.logs.source} since {step.logs.since}"
    return _Observed("logs", step.title or f"{step.logs.source} log checks", request)


def _not_run(suite: Suite, step: AnyStep, why: str) -> StepResult:
    obs = _observed(step)
    obs.skipped = why
    return _result_of(suite, step.id, step.required, obs, prefix="not run")


def _result_of(
    suite: Suite, step_id: str, required: bool, obs: _Observed, prefix: str = "skipped"
) -> StepResult:
    if obs.skipped:
        status, evidence = Status.skipped, f"{prefix}: {obs.skipped}"
    else:
        if obs.failed:
            status = Status.failed
            evidence = _join(obs.head, f"FAILED: {'; '.join(obs.failed)}", obs.detail)
        elif obs.passed:
            status, evidence = Status.passed, _join(obs.head, *obs.passed)
        else:
            # Nothing was checked, so nothing was shown to hold.
            status, evidence = Status.failed, _join(obs.head, "FAILED: no check ran")
    criterion = Criterion(
        id=f"{suite.id}/{step_id}",
        title=obs.title,
        status=status,
        required=required,
        evidence=_short(evidence, EVIDENCE_CHARS),
        duration_ms=obs.duration_ms,
        suite=suite.id,
        bug_id=suite.bug_id,
    )
    return StepResult(
        criterion=criterion,
        kind=obs.kind,
        request=obs.request,
        response_status=obs.response_status,
        response_excerpt=obs.excerpt,
        rows=obs.rows,
        duration_ms=obs.duration_ms,
        notes=obs.notes,
    )


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _check_budget(within_ms: float | None, obs: _Observed) -> None:
    if within_ms is None or obs.duration_ms is None:
        return
    if obs.duration_ms > within_ms:
        obs.failed.append(f"took {obs.duration_ms:.0f} ms, over the {within_ms:g} ms budget")
    else:
        obs.passed.append(f"{obs.duration_ms:.0f} ms within the {within_ms:g} ms budget")


# --------------------------------------------------------------------------- http bodies


def _body(req: HttpRequest, ex: _Expander) -> dict[str, Any]:
    """The httpx keyword of the step's body (one at most: the step model checks), expanded.

    Form values and a raw body are text, so `${name}` becomes the value's text; in `json:` a
    string that is exactly `${name}` keeps the value's JSON type.
    """
    if req.form is not None:
        return {"data": {name: _form_value(value, ex) for name, value in req.form.items()}}
    if req.body is not None:
        return {"content": ex.text(req.body).encode()}
    if req.json_body is not None:
        return {"json": ex.value(req.json_body)}
    return {}


def _form_value(value: Any, ex: _Expander) -> Any:
    if isinstance(value, list):
        return [_form_value(item, ex) for item in value]
    return ex.text(value) if isinstance(value, str) else value


def _files(req: HttpRequest) -> dict[str, tuple[str, bytes, str | None]] | None:
    """httpx's multipart parts: (file name, content, content type or None to guess it).

    A `path` was resolved next to the suite file when the suite loaded (`_resolve_files`).
    """
    if not req.files:
        return None
    parts: dict[str, tuple[str, bytes, str | None]] = {}
    for name, part in req.files.items():
        filename = part.filename or Path(part.path or "").name
        if part.path is not None:
            content = Path(part.path).read_bytes()
        else:
            content = (part.content or "").encode()
        parts[name] = (filename, content, part.content_type)
    return parts


# --------------------------------------------------------------------------- http checks


def _check_status(expected: int | list[int] | None, status: int, obs: _Observed) -> None:
    if expected is None:
        ok, wanted = 200 <= status < 300, "2xx"
    else:
        allowed = expected if isinstance(expected, list) else [expected]
        ok, wanted = status in allowed, " or ".join(str(s) for s in allowed)
    if ok:
        obs.passed.append(f"status {status}")
    else:
        obs.failed.append(f"expected status {wanted}, got {status}")


def _check_body(pattern: str, text: str, obs: _Observed) -> None:
    if re.search(pattern, text):
        obs.passed.append(f"body matches {pattern}")
    else:
        obs.failed.append(f"body does not match {pattern}")


_MISSING = object()


def _select(json_path: str, data: Any) -> tuple[Any, bool]:
    """The value a path selects and whether it selected anything.

    A path that can select several values ($[*].name) always yields a list, so its shape does
    not depend on how many items the API returned. A singular path ($.a, $.items[0]) that
    matches nothing yields _MISSING, which equals nothing, not even null.
    """
    expr = compile_jsonpath(json_path)
    values = [match.value for match in expr.find(data)]
    if not _singular(expr):
        return values, bool(values)
    return (values[0], True) if values else (_MISSING, False)


def _singular(expr: JSONPath) -> bool:
    if isinstance(expr, Root | This):
        return True
    if isinstance(expr, Child):
        return _singular(expr.left) and _singular(expr.right)
    if isinstance(expr, Fields):
        return len(expr.fields) == 1 and expr.fields[0] != "*"
    if isinstance(expr, Index):
        return len(expr.indices) == 1
    return False


def _expand_expectation(expected: Any, ex: _Expander) -> JsonExpect:
    if not isinstance(expected, JsonExpect):
        return JsonExpect(equals=_jsonable(ex.value(expected)))
    update: dict[str, Any] = {}
    for name in ("equals", "contains"):
        if name in expected.model_fields_set:
            update[name] = _jsonable(ex.value(getattr(expected, name)))
    if expected.matches is not None:
        update["matches"] = ex.text(expected.matches, regex=True)
    return expected.model_copy(update=update)


def _check_json_path(json_path: str, expect: JsonExpect, data: Any, obs: _Observed) -> None:
    value, found = _select(json_path, data)
    checks = expect.model_fields_set
    if "exists" in checks:
        _check_exists(json_path, expect.exists, found, value, obs)
    others = [check for check in _CHECKS if check in checks]
    if others and value is _MISSING:
        wanted = ", ".join(_describe_check(check, getattr(expect, check)) for check in others)
        obs.failed.append(f"{json_path} is missing (expected {wanted})")
        return
    for check in others:
        ok, seen = _CHECKS[check](value, getattr(expect, check))
        message = f"{json_path} {seen}"
        (obs.passed if ok else obs.failed).append(message)


def _check_exists(path: str, wanted: bool | None, found: bool, value: Any, obs: _Observed) -> None:
    if wanted and found:
        obs.passed.append(f"{path} exists")
    elif wanted:
        obs.failed.append(f"{path} is missing (expected it to exist)")
    elif found:
        obs.failed.append(f"{path} = {_show(value)} (expected it to be absent)")
    else:
        obs.passed.append(f"{path} is absent")


def _describe_check(check: str, expected: Any) -> str:
    if check == "equals":
        return _show(expected)
    return f"{check} {expected if check in ('matches', 'type', 'length') else _show(expected)}"


def _equals(value: Any, expected: Any) -> tuple[bool, str]:
    if _json_equal(value, expected):
        return True, f"= {_show(value)}"
    return False, f"= {_show(value)}, expected {_show(expected)}"


def _matches(value: Any, pattern: str) -> tuple[bool, str]:
    if re.search(pattern, _as_text(value)):
        return True, f"= {_show(value)} matches {pattern}"
    return False, f"= {_show(value)} does not match {pattern}"


def _has_type(value: Any, wanted: str) -> tuple[bool, str]:
    actual = _json_type(value)
    ok = actual == wanted or (wanted == "number" and actual == "integer")
    if ok:
        return True, f"is {wanted}"
    return False, f"is {actual} ({_show(value)}), expected {wanted}"


def _contains(value: Any, item: Any) -> tuple[bool, str]:
    if isinstance(value, list):
        ok = any(_json_equal(element, item) for element in value)
    elif isinstance(value, str | dict) and isinstance(item, str):
        ok = item in value  # a substring, or a key of an object
    else:
        return False, f"= {_show(value)} cannot contain {_show(item)}"
    if ok:
        return True, f"contains {_show(item)}"
    return False, f"= {_show(value)} does not contain {_show(item)}"


def _has_length(value: Any, length: int) -> tuple[bool, str]:
    if not isinstance(value, list | str | dict):
        return False, f"= {_show(value)} has no length, expected length {length}"
    if len(value) == length:
        return True, f"has length {length}"
    return False, f"has length {len(value)}, expected {length}: {_show(value)}"


_CHECKS: dict[str, Callable[[Any, Any], tuple[bool, str]]] = {
    "type": _has_type,
    "equals": _equals,
    "matches": _matches,
    "contains": _contains,
    "length": _has_length,
}


def _capture_json(name: str, json_path: str, data: Any, obs: _Observed) -> None:
    value, found = _select(json_path, data)
    if not found:
        obs.failed.append(f"capture {name}: {json_path} matched nothing")
        return
    obs.captured[name] = value
    obs.notes.append(f"captured {name} = {_show(value)}")


def _parse_json(response: httpx.Response) -> tuple[Any, bool]:
    try:
        return response.json(), True
    except ValueError:
        return None, False


# --------------------------------------------------------------------------- sql checks


def _sql_error(exc: psycopg.Error, pattern: str | None, obs: _Observed) -> None:
    text = f"{exc.sqlstate}: {_error_text(exc)}" if exc.sqlstate else _error_text(exc)
    obs.head = f"SQL -> error in {obs.duration_ms:.0f} ms"
    # Only an error the server reported counts as the expected failure; a dropped connection
    # (no SQLSTATE) says nothing about the change.
    if pattern is not None and exc.sqlstate and re.search(pattern, text):
        obs.passed.append(f"failed as expected: {_short(text)} matches {pattern}")
    elif pattern is not None:
        obs.failed.append(f"expected an error matching {pattern!r}, got {_short(text)}")
    else:
        obs.failed.append(f"query failed: {_short(text)}")


def _check_rows(
    count: int | None, rows: list[dict[str, Any]], values: dict[str, Any], obs: _Observed
) -> None:
    if count is not None:
        if len(rows) == count:
            obs.passed.append(f"{_n(count, 'row')} as expected")
        else:
            obs.failed.append(f"{_n(len(rows), 'row')}, expected {count}")
    if values and not rows:
        wanted = ", ".join(f"{c} = {_show(v)}" for c, v in values.items())
        obs.failed.append(f"no row to compare (expected {wanted})")
        return
    for column, expected in values.items():
        if column not in rows[0]:
            obs.failed.append(f"column {column} not in the result (columns: {', '.join(rows[0])})")
            continue
        ok, seen = _equals(rows[0][column], _jsonable(expected))
        (obs.passed if ok else obs.failed).append(f"{column} {seen}")


def _capture_columns(capture: dict[str, str], rows: list[dict[str, Any]], obs: _Observed) -> None:
    for name, column in capture.items():
        if not rows:
            obs.failed.append(f"capture {name}: no row returned")
        elif column not in rows[0]:
            obs.failed.append(f"capture {name}: column {column} not in the result")
        else:
            obs.captured[name] = rows[0][column]
            obs.notes.append(f"captured {name} = {_show(rows[0][column])}")


# --------------------------------------------------------------------------- log checks


def _check_absent(pattern: str, lines: list[str], obs: _Observed) -> None:
    hits = [line for line in lines if re.search(pattern, line)]
    if not hits:
        obs.passed.append(f"no line matches {pattern}")
        return
    shown = " | ".join(_short(line, 200) for line in hits[:MAX_LOG_LINES])
    more = f" (first {MAX_LOG_LINES} shown)" if len(hits) > MAX_LOG_LINES else ""
    verb = "matches" if len(hits) == 1 else "match"
    obs.failed.append(f"{_n(len(hits), 'line')} {verb} {pattern}{more}: {shown}")


def _check_present(pattern: str, lines: list[str], obs: _Observed) -> None:
    hit = next((line for line in lines if re.search(pattern, line)), None)
    if hit is not None:
        obs.passed.append(f"{pattern} found: {_short(hit, 200)}")
    elif not lines:
        obs.failed.append(f"{pattern} not found: 0 lines read")
    else:
        obs.failed.append(f"{pattern} not found in {_n(len(lines), 'line')}")


# --------------------------------------------------------------------------- values


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: true is not 1, "1" is not 1, but 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _jsonable(value: Any) -> Any:
    """Database and YAML values (dates, decimals, uuids, bytes) in the form JSON would carry."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(_jsonable(value), ensure_ascii=False)


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(missing)"
    return _short(json.dumps(_jsonable(value), ensure_ascii=False), 120)


def _excerpt(data: Any, text: str, is_json: bool, limit: int, pretty: bool = True) -> str:
    if is_json:
        text = json.dumps(data, ensure_ascii=False, indent=2 if pretty else None)
    return _short(text, limit)


def _short(text: str, limit: int = SHORT_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(exc: BaseException) -> str:
    return _short(" ".join(str(exc).split()) or type(exc).__name__)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _since_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
