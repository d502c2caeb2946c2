"""Check suites in YAML: the typed shape of `checks/**/*.yml`.

A suite is a list of steps run in order against the sandbox. Each step becomes one
criterion of the Verdict (id `<suite id>/<step id>`), so a failed regression step names
the bug it guards.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JsonExpect(Strict):
    """Expectation on the value a JSONPath selects. Give exactly the checks you need."""

    equals: Any = None
    matches: str | None = Field(
        None, description="Python regular expression, searched in str(value)."
    )
    exists: bool | None = None
    type: Literal["string", "number", "integer", "boolean", "array", "object", "null"] | None = None
    contains: Any = Field(None, description="Item that a list must hold, or substring of a string.")
    length: int | None = None


# A mapping is a set of checks (JsonExpect); anything else is a literal the value must equal.
ValueExpect = Annotated[
    Annotated[JsonExpect, Tag("checks")] | Annotated[Any, Tag("literal")],
    Discriminator(lambda v: "checks" if isinstance(v, dict | JsonExpect) else "literal"),
]


class HttpRequest(Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    path: str = Field(description="Path under the API's base URL; ${name} uses a captured value.")
    json_body: Any = Field(None, alias="json")
    headers: dict[str, str] = Field(default_factory=dict)
    auth: bool = Field(True, description="Send the policy's credentials (e.g. a JWT bearer token).")


class HttpExpect(Strict):
    status: int | list[int] | None = None
    json_paths: dict[str, ValueExpect] = Field(
        default_factory=dict,
        alias="json",
        description="JSONPath -> expected value, or a mapping of checks (use equals: for an "
        "object literal).",
    )
    body_matches: str | None = None


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
    error_matches: str | None = Field(
        None, description="The query must fail with an error matching this pattern."
    )


class LogCheck(Strict):
    source: Literal["api", "database"] = "api"
    since: Literal["suite", "step", "api_start"] = Field(
        "suite",
        description="Where reading starts: this suite's start, the previous step, "
        "or the head API's start.",
    )
    must_not_match: list[str] = Field(default_factory=list)
    must_match: list[str] = Field(default_factory=list)


class StepBase(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = ""
    within_ms: float | None = Field(None, description="Time budget; slower is a failure.")
    required: bool = True


class HttpStep(StepBase):
    http: HttpRequest
    expect: HttpExpect = Field(default_factory=HttpExpect)
    capture: dict[str, str] = Field(
        default_factory=dict, description="name -> JSONPath into the JSON response."
    )


class SqlStep(StepBase):
    sql: SqlQuery
    expect: SqlExpect = Field(default_factory=SqlExpect)
    capture: dict[str, str] = Field(
        default_factory=dict, description="name -> column of the first row."
    )


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
