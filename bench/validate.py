"""Benchmark: `gatekeeper validate` on a target's case against a plain floor.

Why: the issue promises that the gate costs little more than doing the same work by hand.
"By hand" is the floor: a straight-line script that merges and builds the branch, starts a
PostgreSQL and the API under test the way the policy says, makes the suites' HTTP calls and
SQL queries, and does the rest of the policy's work, with none of the gate's bookkeeping
(event triggers, statement log, catalog snapshots, lint, risk, report). The ratio of the two
is the price of the gate; the target is at most 1.3x.

    .venv/bin/python bench/validate.py [--target sessions-api|items-api] [--runs N]
    .venv/bin/python bench/validate.py --sandbox containers [--target ...] [--runs N]

Targets:
- `sessions-api` (default): the demo's fix case (`main` <- `builder/P1-SCHEMA-002`, policy
  `policies/sessions-api.yml`). Its floor builds both checkouts, runs initdb, creates the
  database, starts the base API, replays the suites, does the same on the head and starts the
  head API once more (the start-up migrations' second run); then the populated replay: the
  base database copied twice before the head started, `sessions` and `agents` filled with
  1,000 rows each in one copy and 10,000 in the other (the fix's GIN index on the declared
  `sessions` is timed at both sizes), the head API started on each copy and stopped.
- `items-api`: the healthy `additive-column` case of examples/build_items.py (`main` <-
  `builder/ITEMS-201`, FastAPI + SQLAlchemy + Alembic, the policy in the repository's own
  `.github/`). Its floor also migrates the base (`alembic upgrade head`), seeds it, logs in
  per suite with the OAuth2 form, copies the base database (`CREATE DATABASE ... TEMPLATE`),
  fills the copy's `user` and `item` with 1,000 rows each (the policy's `replay.rows`) and
  migrates it, migrates the main database, runs `alembic check`, then downgrades to the
  base's head and upgrades again. It keeps one virtualenv per requirements.txt content
  between runs, as the gate's build cache does (the warm-up fills both); it uses it where it
  lies, while the gate links it into each checkout.

`--sandbox containers` times the gate against itself instead of a floor: the same case in the
containers sandbox (the API image built from the case's Dockerfile, PostgreSQL from
gatekeeper/postgres:15; needs an engine and examples/containers/prepare.sh's images) against
the local sandbox, and prints the containers/local ratio; the target is at most 1.5x.

Both sides run as child processes timed by wall clock, so both pay an interpreter start and
their imports. Runs alternate (G, F, G, F, ...) after one warm-up of each, so drift in the
machine's load hits both alike. It is a measurement, not a test: it exits 0 whatever the ratio,
and 1 only when a run failed (gatekeeper did not approve, or the floor crashed).

The floor deliberately does not use the gate's pipeline, its check runner or LocalSandbox.
It uses `bot.sandbox.postgres.prepare` only to find the same PostgreSQL binaries and the
account that runs them when we are root. It runs initdb itself, while gatekeeper copies a
cluster it initialised once and cached; `--floor-template` makes the floor copy that same
cached cluster instead (with `cp -R`, as gatekeeper does), for a floor without that head
start.

The floor replays the suites without checking anything: each step's request or query in
order, `${var}` filled in from captures, a step skipped when a variable it needs was never
captured (as gatekeeper skips it: on the sessions-api base branch creating a session fails),
and `logs` steps reduced to reading the log. It keeps one HTTP client for the run and one
database connection per API phase; gatekeeper opens a client and a connection per suite.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.3
CONTAINERS_TARGET = 1.5  # the gate in the containers sandbox against the local one
TMP_PREFIX = "gatekeeper-bench-"
RUN_TIMEOUT = 300.0
STEP_TIMEOUT = 10.0
HOST = "127.0.0.1"
DATABASE = "app"
# Same poll intervals as LocalSandbox, so the floor does not win by polling harder.
PG_POLL, API_POLL = 0.02, 0.05
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
Headers = Callable[[dict[str, Any], str], dict[str, str]]

# sessions-api: what policies/sessions-api.yml says, spelled out by hand as a floor script would.
SESSIONS_SUITES = (ROOT / "checks" / "lifecycle", ROOT / "checks" / "regression")
SECRET_ENV = "SESSIONS_JWT_SECRET"
SESSIONS_API = "python -m uvicorn app.main:app --host 127.0.0.1 --port $PORT"
SESSIONS_BUILD = "python -m compileall -q app"
JWT_CLAIMS = {"sub": "admin", "role": "admin"}

# items-api: what its .github/gatekeeper.yml says, spelled out by hand alike.
ITEMS_SUITES = Path(".github") / "gatekeeper" / "checks"
ITEMS_API = "-m uvicorn app.main:app --host 127.0.0.1 --port $PORT"  # after the venv's python
ITEMS_HEALTH = "/api/v1/utils/health-check"
ITEMS_ENV = {
    "SECRET_KEY": "sandbox-only-signing-key",
    "FIRST_SUPERUSER": "admin@example.com",
    "FIRST_SUPERUSER_PASSWORD": "sandbox-admin-password",
}
ITEMS_LOGIN = "/api/v1/login/access-token"
REPLAY_DATABASE = f"{DATABASE}_replay"
REPLAY_ROWS = 1000  # the policy's replay.rows (its default): rows per touched table
LARGER_DATABASE = f"{DATABASE}_10x"  # the second sample, for timing a table held under lock
# The rows the gate's generator would make for the base schema's user and item (parents
# first, a quarter of the optional columns NULL), written by hand for these two tables.
FILL_USERS = """
INSERT INTO "user" (id, email, hashed_password, full_name, is_active, is_superuser,
                    last_login_at)
SELECT gen_random_uuid(), 'user' || g || '@example.com', 'not-a-hash',
       CASE WHEN g %% 4 <> 0 THEN 'User ' || g END, true, false,
       CASE WHEN g %% 4 <> 0 THEN now() END
FROM generate_series(1, %(rows)s) AS g
"""
FILL_ITEMS = """
INSERT INTO item (id, title, description, owner_id, created_at, assignee_id)
SELECT gen_random_uuid(), 'item ' || g, CASE WHEN g %% 4 <> 0 THEN 'generated' END,
       users.ids[1 + g %% cardinality(users.ids)], now(),
       CASE WHEN g %% 4 <> 0 THEN users.ids[1 + (g * 7) %% cardinality(users.ids)] END
FROM generate_series(1, %(rows)s) AS g, (SELECT array_agg(id) AS ids FROM "user") AS users
"""

# sessions-api: the tables the fix touches (sessions) and those they reference (agents).
FILL_AGENTS = """
INSERT INTO agents (id, platform, status, last_heartbeat, cluster_id, cluster_name)
SELECT 'agent-' || g, 'kubernetes', 'online', now(),
       CASE WHEN g %% 4 <> 0 THEN 'cluster-' || g END, CASE WHEN g %% 4 <> 0 THEN 'C' END
FROM generate_series(1, %(rows)s) AS g
"""
FILL_SESSIONS = """
INSERT INTO sessions (id, user_id, template, state, agent_id, created_at, cluster_id)
SELECT 'session-' || g, 'user-' || g, 'vscode', 'running',
       CASE WHEN g %% 4 <> 0 THEN 'agent-' || (1 + g %% %(rows)s) END, now(),
       CASE WHEN g %% 4 <> 0 THEN 'cluster-' || g END
FROM generate_series(1, %(rows)s) AS g
"""


# --------------------------------------------------------------------------- the floor


class Phases:
    """Wall-clock seconds per named phase of one floor run, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Floor:
    """What every target's floor does alike: a work directory, the two checkouts, PostgreSQL
    on loopback, API processes, the suites' replay. As a context manager it stops whatever
    still runs and removes the work directory on every exit path (the `cleanup` phase)."""

    def __init__(self, bindir: Path, run_as: tuple[int, int] | None, template: Path | None) -> None:
        import httpx

        self.bindir, self.run_as, self.template = bindir, run_as, template
        self.phase = Phases()
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        self.env = {**os.environ, "PATH": path}
        self.as_pg: dict[str, Any] = {}
        if run_as is not None:
            self.as_pg = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
        # One client for the whole run, as a script would have; each new one costs ~16 ms
        # (TLS context), which the floor should not pay for plain-HTTP calls on loopback.
        self.client = httpx.Client(timeout=STEP_TIMEOUT, trust_env=False)
        self.work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}floor-"))
        self.api_log = self.work / "api.log"
        self.apis: list[subprocess.Popen[bytes]] = []
        self.server: subprocess.Popen[bytes] | None = None  # PostgreSQL
        self.port = 0

    def __enter__(self) -> Floor:
        return self

    def __exit__(self, *_exc: object) -> None:
        with self.phase("cleanup"):
            for api in list(self.apis):
                self.stop_api(api)
            self.stop_postgres()
            self.client.close()
            shutil.rmtree(self.work, ignore_errors=True)

    def checkouts(self, repo: Path, base: str, head: str) -> tuple[Path, Path]:
        """Clone `base`, merge `head` into it, and a worktree of `base`: (merge, base)."""
        merge_dir, base_dir = self.work / "merge", self.work / "base"
        with self.phase("git"):
            git = {**self.env, **GIT_ENV}
            _check(["git", "clone", "-q", "--shared", "-b", base, str(repo), str(merge_dir)], git)
            _check(["git", "-C", str(merge_dir), "merge", "-q", "--no-edit", f"origin/{head}"], git)
            command = ["git", "-C", str(merge_dir), "worktree", "add", "-q", "--detach"]
            _check([*command, str(base_dir), f"origin/{base}"], git)
        return merge_dir, base_dir

    def postgres(self) -> None:
        """initdb (or a copy of the template cluster), then PostgreSQL on a loopback port."""
        import psycopg

        datadir, sockets = self.work / "pgdata", self.work / "pgsocket"
        with self.phase("initdb" if self.template is None else "copy template"):
            self.work.chmod(0o711)  # the service account must reach its directories
            for directory in (datadir, sockets):
                directory.mkdir(mode=0o700)
                if self.run_as is not None:
                    os.chown(directory, *self.run_as)
            if self.template is None:
                initdb = [str(self.bindir / "initdb"), "-D", str(datadir), "-U", "postgres"]
                initdb += ["--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
                _check(initdb, {**self.env, "TZ": "UTC"}, **self.as_pg)
            else:
                _check(["cp", "-R", f"{self.template}/.", str(datadir)], self.env, **self.as_pg)
        with self.phase("postgres start"):
            self.port = _free_port()
            server = [str(self.bindir / "postgres"), "-D", str(datadir), "-h", HOST]
            server += ["-p", str(self.port), "-k", str(sockets), "-c", "fsync=off"]
            server += ["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            with open(self.work / "postgres.log", "wb") as log:
                postgres = subprocess.Popen(
                    server,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **self.as_pg,
                )
            self.server = postgres
            admin = self.url("postgres")
            _wait(lambda: _connects(psycopg, admin), postgres, "PostgreSQL", PG_POLL)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def sql(
        self,
        phase: str,
        *statements: str,
        database: str = "postgres",
        params: dict[str, Any] | None = None,
    ) -> None:
        """Statements on one autocommit connection, timed as `phase`."""
        import psycopg

        with self.phase(phase), psycopg.connect(self.url(database), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement, params)

    def start_api(
        self, command: str, checkout: Path, env: dict[str, str], health_path: str
    ) -> tuple[subprocess.Popen[bytes], str]:
        """`command` through /bin/sh in `checkout`, logging to api.log; ready once
        `health_path` answers."""
        import httpx

        port = _free_port()
        with open(self.api_log, "ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=checkout,
                env={**self.env, **env, "PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.apis.append(process)
        url = f"http://{HOST}:{port}"
        _wait(lambda: _healthy(httpx, self.client, url + health_path), process, "the API", API_POLL)
        return process, url

    def stop_api(self, api: subprocess.Popen[bytes]) -> None:
        self.apis.remove(api)
        _stop(api, signal.SIGTERM)

    def stop_postgres(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            _stop(server, signal.SIGINT)  # fast shutdown

    def replay(
        self,
        suites: list[dict[str, Any]],
        url: str,
        database: str,
        headers: Headers,
        variables: dict[str, Any],
    ) -> None:
        """Every suite's steps in order on one database connection; `headers(suite, url)`
        gives each suite's credentials, as gatekeeper asks for them once per suite."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            for suite in suites:
                log_mark = self.api_log.stat().st_size
                sent = headers(suite, url)
                for step in suite["steps"]:
                    _replay_step(
                        step, url, self.client, conn, sent, variables, self.api_log, log_mark
                    )


def _load_suites(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The suites as plain YAML, in the order given (the gate's: by file name)."""
    import yaml

    return [yaml.safe_load(Path(path).read_text(encoding="utf-8")) for path in paths]


def _replay_step(
    step: dict[str, Any],
    url: str,
    client: Any,
    conn: Any,
    headers: dict[str, str],
    variables: dict[str, Any],
    api_log: Path,
    log_mark: int,
) -> None:
    """One step's request or query, with captures; nothing is checked.

    A step that needs a variable no earlier step captured is skipped, as gatekeeper skips
    it: on the sessions-api base branch session creation fails, so the steps using its id
    never run. `form` is sent as a form (items-api's wrong-password login).
    """
    from jsonpath_ng.ext import parse

    try:
        _expand(step, variables)
    except KeyError:
        return
    if "http" in step:
        http = step["http"]
        response = client.request(
            http.get("method", "GET"),
            url + _expand(http["path"], variables),
            headers=headers if http.get("auth", True) else {},
            json=_expand(http.get("json"), variables),
            data=_expand(http.get("form"), variables),
        )
        for name, path in (step.get("capture") or {}).items():
            try:
                variables[name] = parse(path).find(response.json())[0].value
            except (ValueError, IndexError):
                variables.pop(name, None)  # a stale value from an earlier suite must not flow
    elif "sql" in step:
        sql = step["sql"]
        params = _expand(sql.get("params") or {}, variables)
        conn.execute(sql["query"], params or None).fetchall()
    elif "logs" in step:
        with open(api_log, "rb") as log:  # read as gatekeeper does; not checked
            log.seek(log_mark)
            log.read()


def _expand(value: Any, variables: dict[str, Any]) -> Any:
    """`${name}` substitution; a string that is exactly one variable keeps the value's type."""
    if isinstance(value, str):
        whole = VARIABLE.fullmatch(value)
        if whole:
            return variables[whole.group(1)]
        return VARIABLE.sub(lambda m: str(variables[m.group(1)]), value)
    if isinstance(value, list):
        return [_expand(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: _expand(item, variables) for key, item in value.items()}
    return value


def _check(command: list[str], env: dict[str, str], **kwargs: Any) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _connects(psycopg: Any, url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError:
        return False
    return True


def _healthy(httpx: Any, client: Any, url: str) -> bool:
    try:
        return client.get(url, timeout=2.0).is_success
    except httpx.HTTPError:
        return False


def _wait(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, poll: float
) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within 60 s")
        time.sleep(poll)


def _stop(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """Signal the whole group, wait, then make sure nothing of it is left."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, first)
    with suppress(subprocess.TimeoutExpired):
        process.wait(10)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --------------------------------------------------------------------------- the targets


@dataclass(frozen=True)
class Target:
    """A demo target the bench times: how its repository is built, which case, which policy,
    and its floor (called with the floor, the merge and the base checkouts, the options)."""

    name: str
    builder: str  # the build script under examples/
    case: str
    base: str
    head: str
    policy: Path | None  # None: the repository's own, read from the base branch
    secret: str | None  # a variable the policy passes to the API, set to a fresh secret
    # Alembic: the floor gets a directory for its virtualenvs (kept between its runs) and
    # the base's head revision, the build script's HEAD_REVISION, to downgrade to.
    versioned: bool
    floor: Callable[[Floor, Path, Path, argparse.Namespace], None]


def sessions_floor(
    floor: Floor, merge_dir: Path, base_dir: Path, _options: argparse.Namespace
) -> None:
    """The sessions-api fix case: both builds, the base and the head API each with the
    suites, one more head start-up (the start-up migrations' second run), and the populated
    replay: the base database copied, its sessions and agents filled, the head API started
    on the copy (its start-up migrations) and stopped."""
    import jwt

    phase = floor.phase
    suites = _load_suites(
        path for directory in SESSIONS_SUITES for path in sorted(directory.glob("*.yml"))
    )
    now = int(time.time())
    token = jwt.encode(
        {"iat": now, "nbf": now, "exp": now + 3600, **JWT_CLAIMS}, floor.env[SECRET_ENV], "HS256"
    )
    bearer = {"Authorization": f"Bearer {token}"}
    with phase("build"):
        for checkout in (merge_dir, base_dir):
            subprocess.run(SESSIONS_BUILD, shell=True, cwd=checkout, env=floor.env, check=True)
    floor.postgres()
    floor.sql("createdb", f"CREATE DATABASE {DATABASE} STRATEGY = FILE_COPY")  # as gatekeeper

    def start(checkout: Path, database: str = DATABASE) -> tuple[subprocess.Popen[bytes], str]:
        api_env = {"DATABASE_URL": floor.url(database), "JWT_SECRET": floor.env[SECRET_ENV]}
        return floor.start_api(SESSIONS_API, checkout, api_env, "/healthz")

    for label, checkout in (("base", base_dir), ("head", merge_dir)):
        with phase(f"{label} api start"):
            api, url = start(checkout)
        with phase(f"{label} calls"):
            floor.replay(suites, url, DATABASE, lambda _suite, _url: bearer, {})
        with phase(f"{label} api stop"):
            floor.stop_api(api)
        if label == "base":
            for copy in (REPLAY_DATABASE, LARGER_DATABASE):
                floor.sql("copy base", f"CREATE DATABASE {copy} TEMPLATE {DATABASE}")
    with phase("head api restart"):
        api, _url = start(merge_dir)
        floor.stop_api(api)
    fill = (FILL_AGENTS, FILL_SESSIONS, "ANALYZE")
    # The fix builds a GIN index on sessions (200,000 declared): its time at two sample sizes.
    for database, rows in ((REPLAY_DATABASE, REPLAY_ROWS), (LARGER_DATABASE, 10 * REPLAY_ROWS)):
        floor.sql("populated replay", *fill, database=database, params={"rows": rows})
        with phase("populated replay"):
            api, _url = start(merge_dir, database)
            floor.stop_api(api)
    with phase("postgres stop"):
        floor.stop_postgres()


def items_floor(floor: Floor, merge_dir: Path, base_dir: Path, options: argparse.Namespace) -> None:
    """The items-api additive-column case: the policy's steps done by hand, one after the
    other."""
    phase = floor.phase
    with phase("build"):
        python = {
            checkout: _virtualenv(options.venvs, checkout / "requirements.txt", floor.env)
            for checkout in (base_dir, merge_dir)
        }
    suites = _load_suites(sorted((base_dir / ITEMS_SUITES).glob("*.yml")))
    floor.postgres()
    floor.sql("createdb", f"CREATE DATABASE {DATABASE} STRATEGY = FILE_COPY")  # as gatekeeper

    def db_env(database: str) -> dict[str, str]:
        """The policy's api.env: the database in parts, the key and the first superuser."""
        parts = {"POSTGRES_SERVER": HOST, "POSTGRES_PORT": str(floor.port)}
        parts |= {
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "trust",
            "POSTGRES_DB": database,
        }
        return {**floor.env, **parts, **ITEMS_ENV}

    def run(checkout: Path, *arguments: str, database: str = DATABASE) -> None:
        _check([str(python[checkout]), *arguments], db_env(database), cwd=checkout)

    def log_in(suite: dict[str, Any], url: str) -> dict[str, str]:
        """The OAuth2 form login, for a suite with a request that sends credentials."""
        if not any(step["http"].get("auth", True) for step in suite["steps"] if "http" in step):
            return {}
        form = {
            "username": ITEMS_ENV["FIRST_SUPERUSER"],
            "password": ITEMS_ENV["FIRST_SUPERUSER_PASSWORD"],
        }
        response = floor.client.post(url + ITEMS_LOGIN, data=form)
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def api_and_suites(label: str, checkout: Path) -> None:
        command = f"{shlex.quote(str(python[checkout]))} {ITEMS_API}"
        with phase(f"{label} api start"):
            api, url = floor.start_api(command, checkout, db_env(DATABASE), ITEMS_HEALTH)
        with phase(f"{label} calls"):
            floor.replay(suites, url, DATABASE, log_in, {"run_id": secrets.token_hex(4)})
        with phase(f"{label} api stop"):
            floor.stop_api(api)

    with phase("base migrate"):
        run(base_dir, "-m", "alembic", "upgrade", "head")
    with phase("seed"):
        run(base_dir, "-m", "app.initial_data")
    api_and_suites("base", base_dir)
    floor.sql("copy base", f"CREATE DATABASE {REPLAY_DATABASE} TEMPLATE {DATABASE}")
    fill = (FILL_USERS, FILL_ITEMS, "ANALYZE")
    floor.sql("populated replay", *fill, database=REPLAY_DATABASE, params={"rows": REPLAY_ROWS})
    with phase("populated replay"):
        run(merge_dir, "-m", "alembic", "upgrade", "head", database=REPLAY_DATABASE)
    with phase("head migrate"):
        run(merge_dir, "-m", "alembic", "upgrade", "head")
    api_and_suites("head", merge_dir)
    with phase("alembic check"):
        run(merge_dir, "-m", "alembic", "check")
    with phase("down and up"):
        run(merge_dir, "-m", "alembic", "downgrade", options.base_revision)
        run(merge_dir, "-m", "alembic", "upgrade", "head")
    with phase("postgres stop"):
        floor.stop_postgres()


def _virtualenv(cache: Path, requirements: Path, env: dict[str, str]) -> Path:
    """The python of the virtualenv made from `requirements`' content: made on first use
    (a warm-up), reused while the content is unchanged, as the gate's build cache reuses its
    build. Used where it lies: a script by hand needs no copy in each checkout."""
    venv = cache / hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not (venv / "complete").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        _check([sys.executable, "-m", "venv", str(venv)], env)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        _check([*pip, "-r", str(requirements)], env)
        (venv / "complete").touch()
    return venv / "bin" / "python"


TARGETS = {
    target.name: target
    for target in (
        Target(
            "sessions-api",
            "build_demo.py",
            "fix case",
            "main",
            "builder/P1-SCHEMA-002",
            ROOT / "policies" / "sessions-api.yml",
            SECRET_ENV,
            False,
            sessions_floor,
        ),
        Target(
            "items-api",
            "build_items.py",
            "additive-column",
            "main",
            "builder/ITEMS-201",
            None,
            None,
            True,
            items_floor,
        ),
    )
}


def floor_once(target: Target, repo: Path, options: argparse.Namespace) -> dict[str, float]:
    """Do the target case's work the plainest way; return the seconds of each phase."""
    run_as = None
    if options.run_as:
        uid, gid = options.run_as.split(":")
        run_as = (int(uid), int(gid))
    floor = Floor(options.bindir, run_as, options.template)
    with floor:
        merge_dir, base_dir = floor.checkouts(repo, target.base, target.head)
        target.floor(floor, merge_dir, base_dir, options)
    return floor.phase.seconds


# --------------------------------------------------------------------------- the driver


def load_example(script: str) -> ModuleType:
    """examples/ is data, not a package: load a build script by path, as bot/demo.py does."""
    name = f"bench_{Path(script).stem}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_child(command: list[str], env: dict[str, str]) -> tuple[float, int, str, str]:
    """Wall seconds, exit code, stdout and stderr of a child. On timeout or Ctrl-C the child
    gets SIGTERM first, so it can remove its sandbox, and SIGKILL only if it hangs."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    except BaseException:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        raise
    return time.perf_counter() - start, process.returncode, out, err


class Bench:
    def __init__(
        self,
        target: Target,
        repo: Path,
        scratch: Path,
        env: dict[str, str],
        floor_args: list[str],
    ):
        self.target, self.repo, self.scratch, self.env = target, repo, scratch, env
        self.floor_args = floor_args
        self.count = 0

    def gatekeeper(self, sandbox: str = "local") -> tuple[float, dict[str, float]]:
        """One `gatekeeper validate` in `sandbox`: its wall seconds and the seconds of its
        stages, the verdict's total and the time inside stages (nested ones, like the two
        builds inside `build`, and stages side by side counted once)."""
        self.count += 1
        out = self.scratch / f"out-{self.count}"
        command = [sys.executable, "-m", "bot", "validate", "--repo", str(self.repo)]
        command += ["--base", self.target.base, "--head", self.target.head, "--out", str(out)]
        command += ["--sandbox", sandbox]
        if self.target.policy is not None:
            command += ["--policy", str(self.target.policy)]
        seconds, code, _stdout, stderr = run_child(command, self.env)
        if code != 0:
            raise RunFailed(f"gatekeeper validate exited {code} (0 = approve):\n{stderr[-3000:]}")
        verdict = json.loads((out / "verdict.json").read_text(encoding="utf-8"))
        ran = sorted(verdict["stages"], key=lambda stage: stage["started"])
        stages = {_stage_label(stage): stage["seconds"] for stage in ran}
        stages["(verdict total)"] = verdict["seconds"]
        stages["(in stages)"] = _covered(
            (stage["started"], stage["started"] + stage["seconds"])
            for stage in ran
            if not stage["within"]
        )
        return seconds, stages

    def floor(self) -> tuple[float, dict[str, float]]:
        command = [sys.executable, str(Path(__file__).resolve()), "--floor-once", str(self.repo)]
        command += ["--target", self.target.name]
        seconds, code, stdout, stderr = run_child([*command, *self.floor_args], self.env)
        if code != 0:
            raise RunFailed(f"the floor exited {code}:\n{stderr[-3000:]}")
        return seconds, json.loads(stdout)


class RunFailed(Exception):
    pass


def _stage_label(stage: dict[str, Any]) -> str:
    """`build base (in build)` for a stage that ran inside another."""
    return f"{stage['name']} (in {stage['within']})" if stage["within"] else stage["name"]


def _covered(spans: Iterable[tuple[float, float]]) -> float:
    """Seconds of the clock some span covers: stages that ran side by side count once."""
    covered, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        covered += max(end - max(start, reached), 0.0)
        reached = max(reached, end)
    return covered


def summary(values: list[float]) -> tuple[float, float, float, str]:
    """Median, p90 (the max below 10 runs, where a p90 would be made up), min, and its label."""
    ordered = sorted(values)
    if len(ordered) >= 10:
        p90, label = statistics.quantiles(ordered, n=10, method="inclusive")[-1], "p90"
    else:
        p90, label = ordered[-1], "max"
    return statistics.median(ordered), p90, ordered[0], label


def print_phases(title: str, runs: list[dict[str, float]], walls: list[float]) -> None:
    """Median seconds per phase. For gatekeeper, the time outside the stages is split into
    the pipeline's own (suite loading, scratch clone, lint, schema diff, risk) and the
    process's (interpreter, imports, policy, ref resolution, report)."""
    names = [n for n in dict.fromkeys(n for run in runs for n in run) if not n.startswith("(")]
    print(f"\n{title} (median seconds)")
    for name in names:
        print(f"  {name:<34} {statistics.median(run.get(name, 0.0) for run in runs):7.3f}")
    staged = [run.get("(in stages)", sum(run.get(name, 0.0) for name in names)) for run in runs]
    if all("(verdict total)" in run for run in runs):
        totals = [run["(verdict total)"] for run in runs]
        pipeline = statistics.median(t - s for t, s in zip(totals, staged, strict=True))
        process = statistics.median(w - t for w, t in zip(walls, totals, strict=True))
        print(f"  {'(pipeline, outside its stages)':<34} {pipeline:7.3f}")
        print(f"  {'(process: start, imports, report)':<34} {process:7.3f}")
    else:
        process = statistics.median(w - s for w, s in zip(walls, staged, strict=True))
        print(f"  {'(process: start, imports, yaml)':<34} {process:7.3f}")
    print(f"  {'wall':<34} {statistics.median(walls):7.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default="sessions-api",
        help="which demo target's case to time (default sessions-api)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--floor-once", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bindir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-as", help=argparse.SUPPRESS)
    parser.add_argument("--template", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--venvs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-revision", help=argparse.SUPPRESS)
    parser.add_argument(
        "--floor-template",
        action="store_true",
        help="floor copies gatekeeper's cached cluster instead of running initdb",
    )
    parser.add_argument(
        "--sandbox",
        choices=("local", "containers"),
        default="local",
        help="containers: time the gate in the containers sandbox against the gate in the "
        f"local one instead of against the floor (target <= {CONTAINERS_TARGET}x)",
    )
    args = parser.parse_args(argv)
    target = TARGETS[args.target]
    if args.floor_once is not None:
        if args.bindir is None:
            parser.error("--floor-once needs --bindir")
        if target.versioned and (args.venvs is None or args.base_revision is None):
            parser.error(f"--floor-once --target {target.name} needs --venvs, --base-revision")
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind, remove the dirs
        phases = floor_once(target, args.floor_once, args)
        sys.stdout.write(json.dumps(phases) + "\n")
        return 0
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return bench(target, args.runs, floor_template=args.floor_template, sandbox=args.sandbox)


def bench(target: Target, runs: int, *, floor_template: bool, sandbox: str) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: stop children, clean up
    sys.path.insert(0, str(ROOT))
    from bot.sandbox.postgres import prepare

    installation = prepare("embedded")
    floor_args = ["--bindir", str(installation.bindir)]
    if installation.run_as is not None:
        floor_args += ["--run-as", f"{installation.run_as.uid}:{installation.run_as.gid}"]
    if floor_template:
        # gatekeeper's own cache (bot/sandbox/postgres.py); its warm-up run creates it.
        floor_args += ["--template", str(installation.cache / "template")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if target.secret is not None:
        if len(env.get(target.secret, "")) < 32:
            env[target.secret] = secrets.token_urlsafe(32)
        env["GATEKEEPER_PASS_ENV"] = target.secret  # the policy hands it to the API
    load_before = os.getloadavg()

    tmp = Path(tempfile.gettempdir())
    before = {p.name for p in tmp.iterdir()}
    scratch = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    # The ratio printed is the first over the second.
    names = ("containers", "local") if sandbox == "containers" else ("gatekeeper", "floor")
    times: dict[str, list[float]] = {name: [] for name in names}
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    failed = False
    try:
        repo = scratch / target.name
        example = load_example(target.builder)
        example.build(repo)
        if target.versioned:
            (scratch / "venvs").mkdir()
            floor_args += ["--venvs", str(scratch / "venvs")]
            floor_args += ["--base-revision", example.HEAD_REVISION]
        runner = Bench(target, repo, scratch, env, floor_args)
        # Each pair runs the gate in the local sandbox first, as against the floor.
        sides: dict[str, Callable[[], tuple[float, dict[str, float]]]] = (
            {"local": runner.gatekeeper, "containers": lambda: runner.gatekeeper("containers")}
            if sandbox == "containers"
            else {"gatekeeper": runner.gatekeeper, "floor": runner.floor}
        )
        for index in range(runs + 1):
            for name, run in sides.items():
                label = "warm-up" if index == 0 else f"run {index}/{runs}"
                seconds, detail = run()
                print(f"{label:<10} {name:<10} {seconds:6.2f} s", file=sys.stderr, flush=True)
                if index > 0:
                    times[name].append(seconds)
                    phases[name].append(detail)
    except RunFailed as exc:
        print(f"\nRUN FAILED: {exc}", file=sys.stderr)
        failed = True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    if all(times.values()):
        goal = CONTAINERS_TARGET if sandbox == "containers" else TARGET
        report(target, names, goal, times, phases, (load_before, os.getloadavg()))
    # Only names gatekeeper or this script create; another job on the machine may own them.
    left = sorted(
        name
        for name in {p.name for p in tmp.iterdir()} - before
        if name.startswith(("gatekeeper-", TMP_PREFIX))
    )
    if left:
        print(f"\nwarning: new in {tmp} (ours or a concurrent job's): {', '.join(left)}")
    return 1 if failed else 0


def report(
    target: Target,
    names: tuple[str, str],
    goal: float,
    times: dict[str, list[float]],
    phases: dict[str, list[dict[str, float]]],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    """The figures, `names[0]` over `names[1]` against `goal`; the load averages say whether
    others shared the machine meanwhile."""
    count = len(times[names[1]])
    first, second = summary(times[names[0]]), summary(times[names[1]])
    title = f"{target.name} {target.case}, {count} runs"
    print(f"\n{title:<34} {'median':>8} {first[3]:>8} {'min':>8}")
    for name, (median, high, low, _) in ((names[0], first), (names[1], second)):
        print(f"{name:<34} {median:7.2f}s {high:7.2f}s {low:7.2f}s")
    ratio_median, ratio_min = first[0] / second[0], first[2] / second[2]
    print(f"{f'ratio {names[0]}/{names[1]}':<34} {ratio_median:7.2f}x {'':>8} {ratio_min:7.2f}x")
    verdict = "met" if ratio_median <= goal else "NOT met"
    print(f"target <= {goal}x (median ratio): {verdict}")
    for name in names:
        title = "floor phases" if name == "floor" else f"gatekeeper stages, {name} (verdict.json)"
        print_phases(title, phases[name], times[name])
    before, after = (" ".join(f"{value:.2f}" for value in load) for load in loads)
    print(f"\n{os.cpu_count()} cores; load average (1, 5, 15 min) before {before}, after {after}")
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: children stopped, temp dirs removed", file=sys.stderr)
        sys.exit(130)
