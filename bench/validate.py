"""Benchmark: `gatekeeper validate` on the demo's fix case against a plain floor.

Why: the issue promises that the gate costs little more than doing the same work by hand.
"By hand" is the floor: a straight-line script that merges and builds the branch, starts a
PostgreSQL and the API under test the way the policy says, makes the suites' HTTP calls and
SQL queries, and restarts the API once more, with none of the gate's bookkeeping (event
triggers, statement log, catalog snapshots, lint, risk, report). The ratio of the two is the
price of the gate; the target is at most 1.3x.

    .venv/bin/python bench/validate.py [--runs N]

Both sides run as child processes timed by wall clock, so both pay an interpreter start and
their imports. Runs alternate (G, F, G, F, ...) after one warm-up of each, so drift in the
machine's load hits both alike. It is a measurement, not a test: it exits 0 whatever the ratio,
and 1 only when a run failed (gatekeeper did not approve, or the floor crashed).

The floor deliberately does not use bot.pipeline, bot.scenario or LocalSandbox. It uses
`bot.sandbox.postgres.prepare` only to find the same PostgreSQL binaries and the account that
runs them when we are root. It runs initdb itself, while gatekeeper copies a cluster it
initialised once and cached; `--floor-template` makes the floor copy that same cached cluster
instead (with `cp -R`, as gatekeeper does), for a floor without that head start.

The floor replays the suites in checks/ without checking anything: each step's request or
query in order, `${var}` filled in from captures, a step skipped when a variable it needs was
never captured (as gatekeeper skips it: on the base branch creating a session fails), and
`logs` steps reduced to reading the log. It keeps one HTTP client for the run and one database
connection per API phase; gatekeeper opens a client and a connection per suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "sessions-api.yml"
SUITE_DIRS = (ROOT / "checks" / "lifecycle", ROOT / "checks" / "regression")
BASE, HEAD = "main", "builder/P1-SCHEMA-002"
TARGET = 1.3
SECRET_ENV = "SESSIONS_JWT_SECRET"
TMP_PREFIX = "gatekeeper-bench-"
RUN_TIMEOUT = 300.0

# What the policy says, spelled out by hand as a floor script would.
API_COMMAND = "python -m uvicorn app.main:app --host 127.0.0.1 --port $PORT"
BUILD_COMMAND = "python -m compileall -q app"
DATABASE = "app"
JWT_CLAIMS = {"sub": "admin", "role": "admin"}
STEP_TIMEOUT = 10.0
HOST = "127.0.0.1"
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


def floor_once(
    repo: Path, bindir: Path, run_as: tuple[int, int] | None, template: Path | None
) -> dict[str, float]:
    """Do the fix case's work the plainest way; return the seconds of each phase.

    `template`: copy this initialised cluster instead of running initdb.
    """
    import httpx
    import jwt
    import psycopg
    import yaml

    phase = Phases()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    as_pg: dict[str, Any] = {}
    if run_as is not None:
        as_pg = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
    suites = [
        yaml.safe_load(path.read_text(encoding="utf-8"))
        for directory in SUITE_DIRS
        for path in sorted(directory.glob("*.yml"), key=lambda p: p.name)
    ]
    now = int(time.time())
    token = jwt.encode(
        {"iat": now, "nbf": now, "exp": now + 3600, **JWT_CLAIMS}, env[SECRET_ENV], "HS256"
    )
    headers = {"Authorization": f"Bearer {token}"}

    # One client for the whole run, as a script would have; each new one costs ~16 ms (TLS
    # context), which the floor should not pay for plain-HTTP calls on loopback.
    client = httpx.Client(timeout=STEP_TIMEOUT, trust_env=False)
    work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}floor-"))
    postgres: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    try:
        merge_dir, base_dir = work / "merge", work / "base"
        with phase("git"):
            git = {**env, **GIT_ENV}
            _check(["git", "clone", "-q", "--shared", "-b", BASE, str(repo), str(merge_dir)], git)
            _check(["git", "-C", str(merge_dir), "merge", "-q", "--no-edit", f"origin/{HEAD}"], git)
            command = ["git", "-C", str(merge_dir), "worktree", "add", "-q", "--detach"]
            _check([*command, str(base_dir), f"origin/{BASE}"], git)
        with phase("build"):
            for checkout in (merge_dir, base_dir):
                subprocess.run(BUILD_COMMAND, shell=True, cwd=checkout, env=env, check=True)

        datadir, sockets = work / "pgdata", work / "pgsocket"
        with phase("initdb" if template is None else "copy template"):
            work.chmod(0o711)  # the service account must reach its directories
            for directory in (datadir, sockets):
                directory.mkdir(mode=0o700)
                if run_as is not None:
                    os.chown(directory, *run_as)
            if template is None:
                initdb = [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres"]
                initdb += ["--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
                _check(initdb, {**env, "TZ": "UTC"}, **as_pg)
            else:
                _check(["cp", "-R", f"{template}/.", str(datadir)], env, **as_pg)
        with phase("postgres start"):
            port = _free_port()
            server = [str(bindir / "postgres"), "-D", str(datadir), "-h", HOST, "-p", str(port)]
            server += ["-k", str(sockets), "-c", "fsync=off", "-c", "synchronous_commit=off"]
            server += ["-c", "full_page_writes=off"]
            with open(work / "postgres.log", "wb") as log:
                postgres = subprocess.Popen(
                    server, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_pg
                )
            admin_url = f"postgresql://postgres@{HOST}:{port}/postgres"
            _wait(lambda: _connects(psycopg, admin_url), postgres, "PostgreSQL", PG_POLL)
        with phase("createdb"), psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE} STRATEGY = FILE_COPY")  # as gatekeeper
        database_url = f"postgresql://postgres@{HOST}:{port}/{DATABASE}"
        api_log = work / "api.log"

        def start_api(checkout: Path) -> tuple[subprocess.Popen[bytes], str]:
            api_port = _free_port()
            api_env = {**env, "PORT": str(api_port), "DATABASE_URL": database_url}
            api_env["JWT_SECRET"] = env[SECRET_ENV]
            with open(api_log, "ab") as log:
                process = subprocess.Popen(
                    ["/bin/sh", "-c", API_COMMAND],
                    cwd=checkout,
                    env=api_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            url = f"http://{HOST}:{api_port}"
            health = f"{url}/healthz"
            _wait(lambda: _healthy(httpx, client, health), process, "the API", API_POLL)
            return process, url

        def replay(url: str) -> None:
            variables: dict[str, Any] = {}
            with psycopg.connect(database_url, autocommit=True) as conn:
                for suite in suites:
                    log_mark = api_log.stat().st_size
                    for step in suite["steps"]:
                        _replay_step(step, url, client, conn, headers, variables, api_log, log_mark)

        for label, checkout in (("base", base_dir), ("head", merge_dir)):
            with phase(f"{label} api start"):
                api, url = start_api(checkout)
            with phase(f"{label} calls"):
                replay(url)
            with phase(f"{label} api stop"):
                _stop(api, signal.SIGTERM)
                api = None
        with phase("head api restart"):
            api, _url = start_api(merge_dir)
            _stop(api, signal.SIGTERM)
            api = None
        with phase("postgres stop"):
            _stop(postgres, signal.SIGINT)  # fast shutdown
            postgres = None
    finally:
        with phase("cleanup"):
            if api is not None:
                _stop(api, signal.SIGTERM)
            if postgres is not None:
                _stop(postgres, signal.SIGINT)
            client.close()
            shutil.rmtree(work, ignore_errors=True)
    return phase.seconds


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
    it: on the base branch session creation fails, so the steps using its id never run.
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


# --------------------------------------------------------------------------- the driver


def build_demo(dest: Path) -> None:
    """examples/ is data, not a package: load its build script by path, as bot/demo.py does."""
    spec = importlib.util.spec_from_file_location(
        "bench_demo_builder", ROOT / "examples" / "build_demo.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.build(dest)


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
    def __init__(self, repo: Path, scratch: Path, env: dict[str, str], floor_args: list[str]):
        self.repo, self.scratch, self.env, self.floor_args = repo, scratch, env, floor_args
        self.count = 0

    def gatekeeper(self) -> tuple[float, dict[str, float]]:
        self.count += 1
        out = self.scratch / f"out-{self.count}"
        command = [sys.executable, "-m", "bot", "validate", "--repo", str(self.repo)]
        command += ["--base", BASE, "--head", HEAD, "--policy", str(POLICY), "--out", str(out)]
        seconds, code, _stdout, stderr = run_child(command, self.env)
        if code != 0:
            raise RunFailed(f"gatekeeper validate exited {code} (0 = approve):\n{stderr[-3000:]}")
        verdict = json.loads((out / "verdict.json").read_text(encoding="utf-8"))
        stages = {stage["name"]: stage["seconds"] for stage in verdict["stages"]}
        stages["(verdict total)"] = verdict["seconds"]
        return seconds, stages

    def floor(self) -> tuple[float, dict[str, float]]:
        command = [sys.executable, str(Path(__file__).resolve()), "--floor-once", str(self.repo)]
        seconds, code, stdout, stderr = run_child([*command, *self.floor_args], self.env)
        if code != 0:
            raise RunFailed(f"the floor exited {code}:\n{stderr[-3000:]}")
        return seconds, json.loads(stdout)


class RunFailed(Exception):
    pass


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
    staged = [sum(run.get(name, 0.0) for name in names) for run in runs]
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
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--floor-once", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bindir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-as", help=argparse.SUPPRESS)
    parser.add_argument("--template", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--floor-template",
        action="store_true",
        help="floor copies gatekeeper's cached cluster instead of running initdb",
    )
    args = parser.parse_args(argv)
    if args.floor_once is not None:
        if args.bindir is None:
            parser.error("--floor-once needs --bindir")
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind, remove the dirs
        run_as = None
        if args.run_as:
            uid, gid = args.run_as.split(":")
            run_as = (int(uid), int(gid))
        phases = floor_once(args.floor_once, args.bindir, run_as, args.template)
        sys.stdout.write(json.dumps(phases) + "\n")
        return 0
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return bench(args.runs, floor_template=args.floor_template)


def bench(runs: int, *, floor_template: bool) -> int:
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
    if len(env.get(SECRET_ENV, "")) < 32:
        env[SECRET_ENV] = secrets.token_urlsafe(32)
    env["GATEKEEPER_PASS_ENV"] = SECRET_ENV  # the demo policy hands it to the API

    tmp = Path(tempfile.gettempdir())
    before = {p.name for p in tmp.iterdir()}
    scratch = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    times: dict[str, list[float]] = {"gatekeeper": [], "floor": []}
    phases: dict[str, list[dict[str, float]]] = {"gatekeeper": [], "floor": []}
    failed = False
    try:
        repo = scratch / "sessions-api"
        build_demo(repo)
        runner = Bench(repo, scratch, env, floor_args)
        sides: dict[str, Callable[[], tuple[float, dict[str, float]]]] = {
            "gatekeeper": runner.gatekeeper,
            "floor": runner.floor,
        }
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

    if times["floor"]:
        report(times, phases)
    # Only names gatekeeper or this script create; another job on the machine may own them.
    left = sorted(
        name
        for name in {p.name for p in tmp.iterdir()} - before
        if name.startswith(("gatekeeper-", TMP_PREFIX))
    )
    if left:
        print(f"\nwarning: new in {tmp} (ours or a concurrent job's): {', '.join(left)}")
    return 1 if failed else 0


def report(times: dict[str, list[float]], phases: dict[str, list[dict[str, float]]]) -> None:
    count = len(times["floor"])
    gk, fl = summary(times["gatekeeper"]), summary(times["floor"])
    print(f"\n{'fix case, ' + str(count) + ' runs':<22} {'median':>8} {gk[3]:>8} {'min':>8}")
    for name, (median, high, low, _) in (("gatekeeper", gk), ("floor", fl)):
        print(f"{name:<22} {median:7.2f}s {high:7.2f}s {low:7.2f}s")
    ratio_median, ratio_min = gk[0] / fl[0], gk[2] / fl[2]
    print(f"{'ratio gatekeeper/floor':<22} {ratio_median:7.2f}x {'':>8} {ratio_min:7.2f}x")
    verdict = "met" if ratio_median <= TARGET else "NOT met"
    print(f"target <= {TARGET}x (median ratio): {verdict}")
    print_phases("gatekeeper stages (verdict.json)", phases["gatekeeper"], times["gatekeeper"])
    print_phases("floor phases", phases["floor"], times["floor"])
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: children stopped, temp dirs removed", file=sys.stderr)
        sys.exit(130)
