"""Check suites in YAML: the typed shape of `checks/**/*.yml`.

A suite is a list of steps run in order against the sandbox. Each step becomes one
criterion of the Verdict (id `<suite id>/<step id>`), so a failed regression step names
the bug it guards.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from jsonpath_ng import JSONPath
from jsonpath_ng.ext import parse as _parse_jsonpath
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

# `${name}` in a step's strings is replaced by a run variable or a value an earlier step captured.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# The run variables every suite may use without capturing them (bot/engine/state.py sets them).
RUN_VARIABLES = frozenset({"run_id"})


@functools.cache
def compile_jsonpath(path: str) -> JSONPath:
    """Parsing is slow (a parser generator runs each time), and suites reuse paths."""
    return _parse_jsonpath(path)


def _check_jsonpath(path: str) -> str:
    # Checked at load time so a typo is a ConfigError with a line number, not a failed step.
    try:
        compile_jsonpath(path)
    except Exception as exc:  # jsonpath-ng raises several unrelated types for bad syntax
        raise ValueError(f"invalid JSONPath {path!r}: {exc}") from None
    return path


def _check_regex(pattern: str) -> str:
    try:
        re.compile(VARIABLE.sub("x", pattern))
    # OverflowError: a{99999999999}; RecursionError: thousands of nested groups.
    except (re.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


def _check_variable_name(name: str) -> str:
    if not VARIABLE.fullmatch(f"${{{name}}}"):
        raise ValueError(f"'{name}' cannot be used as ${{{name}}}: use letters, digits and _")
    return name


JsonPathStr = Annotated[str, AfterValidator(_check_jsonpath)]
Regex = Annotated[str, AfterValidator(_check_regex)]
VariableName = Annotated[str, AfterValidator(_check_variable_name)]


class Strict(BaseModel):
    # allow_inf_nan: a budget of `1e999` (a string to YAML, inf to float()) checks nothing.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JsonExpect(Strict):
    """Expectation on the value a JSONPath selects. Give exactly the checks you need."""

    equals: Any = None
    matches: Regex | None = Field(
        None,
        description="Python regular expression, searched in the value (a string as is, "
        "anything else as compact JSON).",
    )
    exists: bool | None = None
    type: Literal["string", "number", "integer", "boolean", "array", "object", "null"] | None = None
    contains: Any = Field(
        None, description="Item a list must hold, substring of a string, or key of an object."
    )
    length: int | None = None

    @model_validator(mode="after")
    def _some_check(self) -> JsonExpect:
        # An empty mapping would pass whatever the API returned.
        if not self.model_fields_set:
            raise ValueError("give at least one check (write equals: {} for an empty object)")
        return self


# A mapping is a set of checks (JsonExpect); anything else is a literal the value must equal.
ValueExpect = Annotated[
    Annotated[JsonExpect, Tag("checks")] | Annotated[Any, Tag("literal")],
    Discriminator(lambda v: "checks" if isinstance(v, dict | JsonExpect) else "literal"),
]


FormValue = str | int | float | bool


class FilePart(Strict):
    """One file of a multipart request: a file next to the suite, or text written inline.

    A path stays in the suite's directory: a suite must not be able to send the API under
    test (code under review) a file of the gate's host.
    """

    path: str | None = Field(
        None,
        description="File relative to the suite file, in its directory or below; sent as is.",
    )
    content: str | None = Field(None, description="The file's text, instead of a path.")
    filename: str | None = Field(
        None, description="Name the server sees; default: the path's last part."
    )
    content_type: str | None = Field(
        None, description="Default: guessed from the file name (application/octet-stream)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> FilePart:
        if (self.path is None) == (self.content is None):
            raise ValueError("give exactly one of 'path' and 'content'")
        if self.content is not None and not self.filename:
            # Without a name a server (FastAPI's UploadFile among them) sees a form field.
            raise ValueError("'content' needs 'filename'")
        if self.path is not None and (
            not self.path.strip() or self.path.startswith("/") or ".." in Path(self.path).parts
        ):
            raise ValueError(
                f"path '{self.path}' must be relative to the suite file and stay in its "
                "directory (no '..', not absolute)"
            )
        return self


class HttpRequest(Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    path: str = Field(description="Path under the API's base URL; ${name} uses a captured value.")
    json_body: Any = Field(None, alias="json")
    form: dict[str, FormValue | list[FormValue]] | None = Field(
        None,
        description="Fields sent as application/x-www-form-urlencoded, or as multipart "
        "fields with `files`; string values may use ${name}.",
    )
    body: str | None = Field(
        None, description="Raw body, sent as written with `content_type`; may use ${name}."
    )
    content_type: str | None = Field(None, description="Content-Type of `body` (required).")
    files: dict[str, FilePart] | None = Field(
        None,
        min_length=1,
        description="Multipart file parts: field name -> file. May go with `form`.",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    auth: bool = Field(True, description="Send the policy's credentials (e.g. a JWT bearer token).")

    def body_keys(self) -> list[str]:
        """The body keys given a value (`json: null`, as before, sends no body)."""
        given = {
            "json": self.json_body is not None,
            "form": self.form is not None,
            "body": self.body is not None,
            "files": self.files is not None,
        }
        return [key for key, yes in given.items() if yes]


class HttpExpect(Strict):
    status: int | list[int] | None = None
    json_paths: dict[JsonPathStr, ValueExpect] = Field(
        default_factory=dict,
        alias="json",
        description="JSONPath -> expected value, or a mapping of checks (use equals: for an "
        "object literal).",
    )
    body_matches: Regex | None = None


class SqlQuery(Strict):
    query: str
    params: dict[str, Any] = Field(
        default_factory=dict, description="Bound as %(name)s; string values may use ${name}."
    )


class SqlExpect(Strict):
    rows: int | None = Field(None, description="Exact number of rows returned.")
    values: dict[str, Any] = Field(
        default_factory=dict, description="Column -> expected value in the first row."
    )
    error_matches: Regex | None = Field(
        None, description="The query must fail with an error matching this pattern."
    )


class LogCheck(Strict):
    source: Literal["api", "database"] = "api"
    since: Literal["suite", "step", "api_start"] = Field(
        "suite",
        description="Where reading starts: this suite's start, the start of the previous "
        "step (so the window holds what that step caused), or the head API's start.",
    )
    must_not_match: list[Regex] = Field(default_factory=list)
    must_match: list[Regex] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_pattern(self) -> LogCheck:
        if not (self.must_match or self.must_not_match):
            raise ValueError("give must_match or must_not_match patterns")
        return self


class StepBase(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = ""
    within_ms: float | None = Field(None, description="Time budget; slower is a failure.")
    required: bool = True


class HttpStep(StepBase):
    http: HttpRequest
    expect: HttpExpect = Field(default_factory=HttpExpect)
    capture: dict[VariableName, JsonPathStr] = Field(
        default_factory=dict, description="name -> JSONPath into the JSON response."
    )

    @model_validator(mode="after")
    def _one_body(self) -> HttpStep:
        # Checked on the step so the message names it; httpx would send one body and drop
        # the other without a word.
        req = self.http
        keys = req.body_keys()
        if len(keys) > 1 and keys != ["form", "files"]:
            raise ValueError(
                f"step '{self.id}' gives {' and '.join(keys)}: a request has one body "
                "(json, form, body or files; only files may go with form, as multipart fields)"
            )
        if (req.body is None) != (req.content_type is None):
            given, missing = (
                ("body", "content_type") if req.body is not None else ("content_type", "body")
            )
            raise ValueError(f"step '{self.id}': '{given}' needs '{missing}'")
        if req.content_type is not None and any(
            name.lower() == "content-type" for name in req.headers
        ):
            raise ValueError(
                f"step '{self.id}' sets the content type twice: in content_type and in headers"
            )
        return self


class SqlStep(StepBase):
    sql: SqlQuery
    expect: SqlExpect = Field(default_factory=SqlExpect)
    capture: dict[VariableName, str] = Field(
        default_factory=dict, description="name -> column of the first row."
    )

    @model_validator(mode="after")
    def _error_alone(self) -> SqlStep:
        # A query expected to fail returns no rows to compare or capture.
        if self.expect.error_matches is not None and (
            self.expect.rows is not None or self.expect.values or self.capture
        ):
            raise ValueError("error_matches cannot be combined with rows, values or capture")
        return self


class LogsStep(StepBase):
    logs: LogCheck


def _step_kind(data: Any) -> str | None:
    if isinstance(data, BaseModel):
        data = data.__dict__
    if not isinstance(data, dict):
        return None
    kinds = [k for k in ("http", "sql", "logs") if k in data]
    return f"{kinds[0]}-step" if len(kinds) == 1 else None


Step = Annotated[
    Annotated[HttpStep, Tag("http-step")]
    | Annotated[SqlStep, Tag("sql-step")]
    | Annotated[LogsStep, Tag("logs-step")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one of the keys http, sql, logs",
    ),
]


class Suite(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str
    kind: Literal["lifecycle", "regression", "smoke"] = "lifecycle"
    bug_id: str | None = Field(None, description="For regression suites: the fix this guards.")
    description: str = ""
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _unique_step_ids(cls, steps: list[HttpStep | SqlStep | LogsStep]) -> list:
        # Step ids become criterion ids; two equal ids would hide one result behind the other.
        seen: dict[str, int] = {}
        for index, step in enumerate(steps):
            if step.id in seen:
                first = seen[step.id]
                raise ValueError(f"duplicate step id '{step.id}' (steps.{first} and steps.{index})")
            seen[step.id] = index
        return steps


Loc = tuple[str | int, ...]


def variable_uses(step: HttpStep | SqlStep | LogsStep) -> Iterator[tuple[str, Loc]]:
    """Each `${name}` the runner expands in `step`, with where it is written in the step.

    The places are the runner's (bot/checking/runner.py, `_Expander`): the request path,
    header values and body (json, form values, a raw body; not files); the expected JSON
    values and patterns; SQL parameters and expected values; log patterns. Locations use the
    YAML keys (`json`, not `json_body`).
    """
    if isinstance(step, HttpStep):
        yield from _uses(step.http.path, ("http", "path"))
        for name, value in step.http.headers.items():
            yield from _uses(value, ("http", "headers", name))
        yield from _uses(step.http.json_body, ("http", "json"))
        yield from _uses(step.http.form, ("http", "form"))
        yield from _uses(step.http.body, ("http", "body"))
        for path, expected in step.expect.json_paths.items():
            where = ("expect", "json", path)
            if isinstance(expected, JsonExpect):
                for check in ("equals", "contains", "matches"):
                    if check in expected.model_fields_set:
                        yield from _uses(getattr(expected, check), (*where, check))
            else:
                yield from _uses(expected, where)
        yield from _uses(step.expect.body_matches, ("expect", "body_matches"))
    elif isinstance(step, SqlStep):
        for name, value in step.sql.params.items():
            yield from _uses(value, ("sql", "params", name))
        for column, value in step.expect.values.items():
            yield from _uses(value, ("expect", "values", column))
        yield from _uses(step.expect.error_matches, ("expect", "error_matches"))
    else:
        for key in ("must_not_match", "must_match"):
            for index, pattern in enumerate(getattr(step.logs, key)):
                yield from _uses(pattern, ("logs", key, index))


def _uses(value: Any, loc: Loc) -> Iterator[tuple[str, Loc]]:
    # As the runner expands: strings anywhere in lists and mapping values, never keys.
    if isinstance(value, str):
        for match in VARIABLE.finditer(value):
            yield match.group(1), loc
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _uses(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _uses(item, (*loc, key))
