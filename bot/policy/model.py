"""The policy: what a repository's maintainers decide about their gate, as a typed model.

Every key is documented here once; `gatekeeper policy schema` turns these models into the
JSON Schema editors use, so the docs and the validation never disagree.
"""

from __future__ import annotations

import difflib
import math
import re
import string
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bot.checking.model import JsonPathStr
from bot.judging.verdict import Decision, Risk

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")


def duration_seconds(value: str | float | int) -> float:
    """'5s', '250ms', '2min', 10 -> seconds. Policies mix PostgreSQL-style and plain numbers."""
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e300 else math.inf
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"'{value}' is not a duration (use e.g. 500ms, 5s, 2min)")
        number, unit = float(match.group(1)), match.group(2) or "s"
        seconds = number * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]
    if not math.isfinite(seconds):  # 400 digits read as a float are infinite
        raise ValueError(f"'{value}' is not a finite duration")
    return seconds


def _relative_path(entry: str) -> str:
    # Here for the line number; LoadedPolicy.suite_paths checks where an entry leads on disk
    # (`..`, links), which a model cannot see.
    if not entry.strip() or "\0" in entry:
        raise ValueError(f"{entry!r} is not a path")
    if entry.startswith("/"):
        raise ValueError(f"'{entry}' is absolute; name suites relative to the policy file")
    return entry


SuiteEntry = Annotated[str, AfterValidator(_relative_path)]


class Strict(BaseModel):
    # allow_inf_nan: `step: 1e999` is a string YAML leaves alone and float() reads as inf;
    # an infinite timeout or budget is a mistake, never a setting.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Branches(Strict):
    builder: list[str] = Field(
        default_factory=lambda: ["builder/*"],
        description="Glob patterns of builder branches whose pull requests are validated.",
    )
    target: list[str] = Field(
        default_factory=lambda: ["main"], description="Glob patterns of protected target branches."
    )


class Build(Strict):
    commands: list[str] = Field(
        default_factory=list, description="Shell commands run in the merge result, in order."
    )
    timeout: float = Field(600, gt=0, description="Seconds for all build commands together.")
    network: bool = Field(
        False,
        description="Give the build commands the host's network (to install dependencies); "
        "otherwise they run, like everything of the change, with loopback only.",
    )
    cache_key: list[str] = Field(
        default_factory=list,
        description="Files whose content keys a cached build (e.g. requirements.txt, "
        "uv.lock): a side whose files match reuses `cache_paths` instead of building. Only "
        "the base branch's builds are stored (reviewed code: a change cannot plant files "
        "in a later run's build); either side reuses them.",
    )
    cache_paths: list[str] = Field(
        default_factory=list,
        description="What a cached build keeps, relative to the checkout (e.g. .venv). They "
        "move between checkouts: call tools as `.venv/bin/python -m tool`, since console "
        "scripts keep the path they were built at.",
    )

    @model_validator(mode="after")
    def _cache_needs_both(self) -> Build:
        if bool(self.cache_key) != bool(self.cache_paths):
            raise ValueError("a build cache needs both 'cache_key' and 'cache_paths'")
        for entry in (*self.cache_key, *self.cache_paths):
            _relative_path(entry)
            if ".." in entry.split("/"):
                raise ValueError(f"'{entry}' leaves the checkout")
        return self


class Api(Strict):
    command: str = Field(description="Shell command that starts the API under test.")
    workdir: str = Field(".", description="Directory of the repository to run it in.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment; ${NAME} expands from the variables named in "
        "GATEKEEPER_PASS_ENV.",
    )
    port_env: str = Field("PORT", description="Variable through which the API gets its port.")
    database_url_env: str = Field("DATABASE_URL", description="Variable for the database URL.")
    health_path: str = Field("/healthz", pattern=r"^/")
    start_timeout: float = Field(30, gt=0, description="Seconds to wait for health.")


class Database(Strict):
    binaries: str = Field(
        "embedded",
        description="'embedded' (PostgreSQL 18 from pip), 'system' (the distribution's "
        "postgresql package) or a path to a PostgreSQL bin directory.",
    )
    name: str = Field("app", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    extensions: list[str] = Field(
        default_factory=list,
        description="Extensions the migrations need: checked before anything runs, then "
        "created by the gate (the change's role is no superuser).",
    )


class Migrations(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    mode: Literal["startup", "directory", "command", "alembic"] = Field(
        "startup",
        validation_alias=AliasChoices("tool", "mode"),
        description="tool (or mode): startup: the API applies them when it starts; "
        "directory: *.sql files applied in name order; command: a shell command with the "
        "database URL in its env; alembic: a versioned tool, revision by revision.",
    )
    directory: str | None = Field(None, description="For mode 'directory', relative to the repo.")
    command: str | None = Field(None, description="For mode 'command'.")
    reapply: bool = Field(True, description="Apply a second time to prove idempotency.")
    workdir: str = Field(
        ".", description="alembic: the directory holding alembic.ini, relative to the repo."
    )
    config: str = Field("alembic.ini", description="alembic: the config file, in workdir.")
    python: str = Field(
        "python",
        description="alembic: the interpreter that has the project and Alembic installed, "
        "relative to workdir or on PATH (e.g. .venv/bin/python from the build).",
    )
    downgrade: Literal["review", "required", "skip"] = Field(
        "review",
        description="alembic: downgrade to the base's head, compare with the base schema and "
        "upgrade again. review: a failure is a high-risk finding; required: a failed "
        "criterion; skip: not run.",
    )
    check_models: bool = Field(
        True,
        description="alembic: compare the models with the migrated schema (`alembic "
        "check`); a difference is a failed criterion listing it.",
    )

    @model_validator(mode="after")
    def _mode_needs(self) -> Migrations:
        if self.mode == "directory" and not self.directory:
            raise ValueError("mode 'directory' needs 'directory'")
        if self.mode == "command" and not self.command:
            raise ValueError("mode 'command' needs 'command'")
        return self

    @property
    def versioned(self) -> bool:
        """A tool that records what it applied never runs a revision twice."""
        return self.mode == "alembic"


class Locks(Strict):
    max_blocking: str = Field(
        "2s",
        description="How long a deploy may block a declared table's reads and writes: a "
        "rewrite predicted over it is high risk, ten times over it critical.",
    )

    @field_validator("max_blocking")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        if duration_seconds(value) <= 0:
            raise ValueError("max_blocking must be more than 0")
        return value


class Replay(Strict):
    """The populated replay (bot/migrating/replay.py): the change migrates once more on a copy
    of the base database whose touched tables hold generated rows."""

    rows: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="Rows generated per table the change touches (and per table those "
        "reference); 0: no replay.",
    )


class Seed(Strict):
    """Data the base schema gets before the change migrates: the rows the migration and the
    checks meet (a first admin, reference data). A failure is the base's, never the change's."""

    commands: list[str] = Field(
        default_factory=list,
        description="Shell commands run in the base checkout with the run's environment.",
    )
    sql: list[str] = Field(
        default_factory=list,
        description="SQL files of the base checkout, applied as the application's role.",
    )

    @field_validator("sql")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        for entry in value:
            _relative_path(entry)
        return value


class Login(Strict):
    """A request to the API's token endpoint, as its own clients log in."""

    path: str = Field(pattern=r"^/", description="Token endpoint, under the API's base URL.")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    form: dict[str, str] | None = Field(
        None,
        description="Fields sent as application/x-www-form-urlencoded (OAuth2's password "
        "flow); ${NAME} expands from api.env and the variables in GATEKEEPER_PASS_ENV.",
    )
    json_body: dict[str, Any] | None = Field(
        None, alias="json", description="A JSON body instead of `form`; ${NAME} expands alike."
    )
    token: JsonPathStr = Field(description="JSONPath of the token in the JSON response.")
    status: int | list[int] | None = Field(
        None, description="Expected status (or statuses); default: any 2xx."
    )

    @model_validator(mode="after")
    def _one_body(self) -> Login:
        if (self.form is None) == (self.json_body is None):
            raise ValueError("give exactly one of 'form' and 'json' (the credentials)")
        return self


class Auth(Strict):
    type: Literal["none", "jwt", "bearer", "login"] = Field(
        "none",
        description="none; jwt: sign a token with a secret; bearer: a fixed token; login: log "
        "in through the API (`login`), per suite and on each side.",
    )
    secret_env: str | None = Field(
        None, description="jwt: variable holding the signing secret; bearer: the token."
    )
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    claims: dict[str, str | int | bool | list[str]] = Field(default_factory=dict)
    ttl_seconds: int = Field(3600, gt=0)
    login: Login | None = Field(None, description="For type 'login': the token request.")
    header: str = "Authorization"
    value: str = Field(
        "Bearer {token}",
        description="The header's value; {token} is the signed JWT, the bearer secret or the "
        "token the login returned.",
    )

    @model_validator(mode="after")
    def _type_needs(self) -> Auth:
        if self.type in ("jwt", "bearer") and not self.secret_env:
            raise ValueError(f"auth type '{self.type}' needs 'secret_env'")
        if self.type == "login" and self.login is None:
            raise ValueError("auth type 'login' needs 'login' (path, form or json, token)")
        if self.type != "login" and self.login is not None:
            raise ValueError(f"'login' is for auth type 'login', not '{self.type}'")
        if self.type == "login" and self.secret_env:
            raise ValueError(
                "auth type 'login' takes its credentials from ${NAME} in login.form or "
                "login.json, not from 'secret_env'"
            )
        return self

    @field_validator("value")
    @classmethod
    def _token_template(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"'{value}' is not a template: {exc}") from None
        if fields != {"token"}:
            raise ValueError(f"'{value}' must hold {{token}} and no other {{field}}")
        return value


class Timeouts(Strict):
    step: float = Field(10, gt=0, description="Seconds for one check step's request.")
    lock_timeout: str = Field("5s", description="Applied to the database during migrations.")
    statement_timeout: str = Field("60s", description="Applied to the database during the run.")
    run: float = Field(900, gt=0, description="Seconds for the whole validation.")
    deadline: float | None = Field(
        None,
        gt=0,
        description="The App only: seconds from a delivery to its final status, queue waits "
        "included; past it the run ends in error. Default: the p95 of the service's successful "
        "runs plus a margin.",
    )

    @field_validator("lock_timeout", "statement_timeout")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class Decide(Strict):
    required: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Glob patterns of criterion ids that must pass; a failure rejects.",
    )
    risk: dict[Risk, Literal["approve", "review", "reject"]] = Field(
        default_factory=lambda: {
            Risk.low: "approve",
            Risk.medium: "approve",
            Risk.high: "review",
            Risk.critical: "reject",
        },
        description="Decision for each risk level when every required criterion passed.",
    )

    @field_validator("risk")
    @classmethod
    def _all_levels(cls, value: dict[Risk, str]) -> dict[Risk, str]:
        missing = [level.value for level in Risk if level not in value]
        if missing:
            raise ValueError(f"no decision for risk level(s): {', '.join(missing)}")
        return value

    def for_risk(self, risk: Risk) -> Decision:
        return Decision(self.risk[risk])


class Lint(Strict):
    """The team's view of the migration rules (see `gatekeeper` README: Migration rules)."""

    severity: dict[str, Risk] = Field(
        default_factory=dict, description="Rule id -> level, overriding the rule's default."
    )
    disabled: dict[str, str] = Field(
        default_factory=dict,
        description="Rule id -> reason. Findings stay in the report as suppressed, with it.",
    )
    pg_version: int = Field(18, ge=9, description="Major version of the production server.")
    require_idempotent: bool | None = Field(
        None, description="Flag statements that fail when re-run; default: migrations.reapply."
    )

    @field_validator("severity", "disabled")
    @classmethod
    def _known_rules(cls, value: dict[str, object]) -> dict[str, object]:
        from bot.judging.lint.rules import ENGINE_FINDINGS, RULES

        known = sorted([*RULES, *ENGINE_FINDINGS])
        for rule in value:
            if rule not in known:
                close = difflib.get_close_matches(rule, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown rule '{rule}'{hint}")
        return value

    @field_validator("disabled")
    @classmethod
    def _reasons(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [rule for rule, reason in value.items() if not reason.strip()]
        if empty:
            raise ValueError(f"disabling {', '.join(empty)} needs a reason")
        return value


class Report(Strict):
    """What the GitHub App posts besides the status, the check run and the sticky comment."""

    review: bool = Field(False, description="Also post a PR review: APPROVE or REQUEST_CHANGES.")
    labels: bool = Field(False, description="Keep one risk:low ... risk:critical label on the PR.")


class ActionsRunner(Strict):
    """Dispatch mode: the service routes, a GitHub Actions workflow does the heavy work."""

    workflow: str = Field(
        "gatekeeper.yml", description="File name (or id) of the repository's gatekeeper workflow."
    )
    ref: str | None = Field(None, description="Branch to run the workflow from; default: base.")
    timeout: float = Field(
        3600, gt=0, description="Seconds for the workflow to report back before `error`."
    )


class TableSize(Strict):
    rows: int = Field(ge=0, description="Expected production row count.")


class ContainerLimits(Strict):
    """Resources one container may use; a container over its memory limit is killed."""

    cpus: float | None = Field(None, gt=0, description="CPUs, e.g. 1.5; none: no limit.")
    memory: str | None = Field(
        None,
        pattern=r"^\d+[bkmgBKMG]?$",
        description="Memory, e.g. 512m or 2g (swap is capped at the same value); none: no limit.",
    )
    pids: int | None = Field(None, gt=0, description="Processes and threads; none: no limit.")


class ContainerDatabase(Strict):
    image: str = Field(
        "gatekeeper/postgres",
        description="PostgreSQL image. The default is built locally by "
        "examples/containers/prepare.sh; the official 'postgres' works where images can be "
        "pulled. Both honour POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB.",
    )
    version: str = Field(
        "15", description="The image's tag: the production server's major version."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    data_dir: str = Field(
        "/var/lib/postgresql/data", description="PGDATA in the image; a labelled volume."
    )
    start_timeout: float = Field(60, gt=0, description="Seconds to accept connections.")
    limits: ContainerLimits | None = Field(None, description="Default: containers.limits.")


class ContainerApi(Strict):
    context: str = Field(".", description="Build context, relative to api.workdir.")
    dockerfile: str = Field("Dockerfile", description="Relative to the build context.")
    target: str | None = Field(None, description="Build stage to stop at (multi-stage builds).")
    build_args: dict[str, str] = Field(
        default_factory=dict, description="--build-arg values; ${NAME} expands like api.env."
    )
    build_timeout: float = Field(600, gt=0, description="Seconds for one image build.")
    command: str | None = Field(
        None,
        description="Run this with /bin/sh -c instead of the image's CMD (which is what "
        "gets deployed, so the default).",
    )
    port: int = Field(
        8000,
        gt=0,
        lt=65536,
        description="Port the API listens on inside its container "
        "(network: isolated or ports); with network: host it gets a free port in api.port_env.",
    )
    limits: ContainerLimits | None = Field(None, description="Default: containers.limits.")


class ContainerHealth(Strict):
    command: str | list[str] = Field(
        description="Run inside the container; healthy once it exits 0 (a string runs "
        "with /bin/sh -c)."
    )
    interval: float = Field(0.5, gt=0, description="Seconds between tries.")
    timeout: float = Field(60, gt=0, description="Seconds to become healthy.")


class ContainerService(Strict):
    """Another container the API needs (a cache, a queue, a mock of a third party)."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]*$",
        description="Host name the API reaches it by (both network modes).",
    )
    image: str
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[int] = Field(
        default_factory=list,
        description="Ports it listens on; without a health command, ready once they accept.",
    )
    command: str | list[str] | None = None
    health: ContainerHealth | None = None
    limits: ContainerLimits | None = Field(None, description="Default: containers.limits.")


class Containers(Strict):
    """The containers sandbox (`sandbox: containers` or `--sandbox containers`)."""

    network: Literal["isolated", "ports", "host"] = Field(
        "isolated",
        description="isolated: the containers share a network namespace holding only a "
        "loopback (no route out; works without bridge networking; needs Gatekeeper to run as "
        "root, else it falls back to ports or host and the report says so); ports: a network "
        "of the run's own and published loopback ports (Docker's usual setup); host: the "
        "host's network, every service on a free loopback port. Only isolated keeps the "
        "change's code from reaching other addresses.",
    )
    database: ContainerDatabase = Field(default_factory=ContainerDatabase)
    api: ContainerApi = Field(default_factory=ContainerApi)
    services: list[ContainerService] = Field(default_factory=list)
    limits: ContainerLimits = Field(
        default_factory=ContainerLimits, description="Limits of every container."
    )
    sweep_after: str = Field(
        "2h",
        description="At start-up, remove containers, networks and volumes that crashed runs "
        "left behind: at once when the process that made them is gone from this machine, "
        "else once they are this old (longer than any run: timeouts.run).",
    )
    keep_images: str = Field(
        "168h", description="Cached API images unused for this long are removed at start-up."
    )

    @field_validator("sweep_after", "keep_images")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        duration_seconds(value)
        return value

    @model_validator(mode="after")
    def _unique_services(self) -> Containers:
        names = [s.name for s in self.services]
        reserved = {"database", "api"}
        clashes = sorted({n for n in names if names.count(n) > 1 or n in reserved})
        if clashes:
            raise ValueError(f"service names must be unique and not 'database' or 'api': {clashes}")
        return self


class Policy(Strict):
    version: Literal[1] = 1
    name: str = ""
    branches: Branches = Field(default_factory=Branches)
    build: Build = Field(default_factory=Build)
    api: Api | None = Field(None, description="Without it, only migrations and SQL checks run.")
    database: Database = Field(default_factory=Database)
    migrations: Migrations = Field(default_factory=Migrations)
    seed: Seed = Field(default_factory=Seed)
    replay: Replay = Field(default_factory=Replay)
    locks: Locks = Field(default_factory=Locks)
    auth: Auth = Field(default_factory=Auth)
    suites: list[SuiteEntry] = Field(
        default_factory=list,
        description="Check suite files or directories, relative to the policy file.",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
    decision: Decide = Field(default_factory=Decide)
    tables: dict[str, TableSize] = Field(default_factory=dict)
    lint: Lint = Field(default_factory=Lint)
    report: Report = Field(default_factory=Report)
    sandbox: Literal["local", "containers"] = Field(
        "local",
        description="local: PostgreSQL and the API as processes (fast, embedded); containers: "
        "the PR's Dockerfile and a PostgreSQL image (faithful). `--sandbox` overrides it.",
    )
    containers: Containers = Field(default_factory=Containers)
    runner: Literal["local", "actions"] = Field(
        "local",
        description="local: the service validates in its own sandbox; actions: it dispatches "
        "the repository's gatekeeper workflow, which validates and reports back itself.",
    )
    actions: ActionsRunner = Field(default_factory=ActionsRunner)
    resource: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$",
        description="The App only: a shared resource validations need alone (a staging "
        "database, an environment). Runs naming the same resource wait for it first in, first "
        "out, and their check run shows their place in line.",
    )

    @model_validator(mode="after")
    def _startup_needs_api(self) -> Policy:
        if self.migrations.mode == "startup" and self.api is None:
            raise ValueError("migrations mode 'startup' needs an 'api' section to start")
        return self
