"""Where the change's processes run: an unprivileged account, in namespaces of their own.

Build, migration and seed commands and the API under test are code nobody has reviewed. Run
as the gate's own user they could read its state directory, the App's key file, and reach the
superuser of every cluster it runs through the unix socket (peer authentication trusts the
gate's uid). So, when Gatekeeper runs as root, each such process is started as

    nsenter --net=…  unshare --mount --pid --fork --kill-child --mount-proc  (a script)
        setpriv …  command

- **an unprivileged account of the run's own** (`gatekeeper-run-<slot>`, created on first
  use, one per concurrent run; no supplementary groups, no new privileges: a setuid binary
  cannot raise it back), so at the end, at a timeout or a cancel, killing every process of
  that uid ends whatever the change started, and runs cannot touch each other;
- **a cgroup (v2) of the run's own** (`gatekeeper/run-<slot>` under the machine's cgroup2
  mount) where the machine has one: every process the change starts is born in it, and
  `cgroup.kill` ends them all at once, however they forked;
- **a pid namespace**: when its first process ends, the kernel kills every process in it, so
  a double fork or a `setsid` daemon cannot outlive the command; killing `unshare` (a timeout,
  Ctrl-C, a stopped API) kills the namespace; what a SIGKILLed gate left is killed by the
  next run's `sweep` (every slot nobody holds);
- **a network namespace** of the run's slot (netns.py) holding only a loopback, where the
  sandbox's PostgreSQL and the API listen: no egress, no cloud metadata address; builds get
  the host's network only when the policy says `build.network: true`;
- **a mount namespace** in which the directories the account cannot enter (root's home, where
  pyenv or a virtualenv may live) are replaced by an empty tmpfs holding only the paths the
  change needs: the interpreter Gatekeeper runs on, so that a policy's `python -m …` works;
  and /tmp, /var/tmp and /dev/shm are fresh tmpfs of its own (its scratch dir bound back), so
  it neither reads other runs' files there nor leaves any behind.

Not root (a developer's machine), or without `unshare`/`setpriv`: the change runs as the
gate's user, contained by process groups only, and the report says "not isolated".
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import shutil
import signal
import stat
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from bot.sandbox import netns
from bot.sandbox.base import SandboxError
from bot.sandbox.postgres import RunAs, system_account

RUN_ACCOUNT = "gatekeeper-run"  # one account per concurrent run: gatekeeper-run-<slot>
_SLOTS = 64
SLOTS_DIR = Path("/run/gatekeeper/slots")
_KILL_ROUNDS = 50
# The confining shell's $0: what `ps` shows for it.
MARKER = "gatekeeper-confine"


@dataclass(frozen=True)
class Confinement:
    """How to start the change's processes; `prefix` is empty when they are not isolated.
    A context manager: leaving it kills whatever the account still runs and frees its slot."""

    prefix: tuple[str, ...]
    run_as: RunAs | None
    note: str  # for the report: what isolates the change, or why nothing does
    slot: int | None = None  # an fd holding the account's slot lock (flock) while the run lasts
    # The run's network namespace (netns.py): `prefix` enters it; `networked` does not.
    netns: Path | None = None
    networked: tuple[str, ...] = ()
    cgroup: Path | None = None  # the run's cgroup v2 directory, where the machine has one

    def give(self, *paths: Path) -> None:
        """Hand directories the change writes (checkouts, HOME, TMPDIR) to its account, and
        close them to every other (a concurrent run's account included)."""
        if self.run_as is None:
            return
        uid, gid = self.run_as.uid, self.run_as.gid
        for root in paths:
            os.lchown(root, uid, gid)
            root.chmod(0o700)
            for directory, subdirectories, files in os.walk(root):
                for name in (*subdirectories, *files):
                    os.lchown(Path(directory) / name, uid, gid)

    def kill_all(self) -> int:
        """SIGKILL every process of the run's account, however it was started (double
        forks, setsid, another namespace): the account is this run's alone. Returns how many
        were found; loops until none is left (a process may fork while we look)."""
        if self.run_as is None:
            return 0
        if self.cgroup is not None:
            kill_cgroup(self.cgroup)
        return kill_uid(self.run_as.uid)

    def __enter__(self) -> Confinement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()
        if self.slot is not None:
            os.close(self.slot)  # releases the flock


NOT_ISOLATED = Confinement((), None, "not isolated: Gatekeeper does not run as root")


def prepare(scratch: Path) -> Confinement:
    """The confinement for one run whose private files live under `scratch` (removed with
    it). `scratch` is opened to the account for traversal only (0711). Use it as a context
    manager."""
    if os.geteuid() != 0:
        return NOT_ISOLATED
    missing = [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]
    if missing:
        return Confinement(
            (), None, f"not isolated: {' and '.join(missing)} not found (util-linux)"
        )
    number, slot = _claim_slot()
    try:
        account = f"{RUN_ACCOUNT}-{number}"
        run_as = system_account(account, SandboxError)
        scratch.chmod(0o711)
        stage = SLOTS_DIR.parent / "stage" / str(number)
        stage.mkdir(mode=0o700, parents=True, exist_ok=True)
        group = _cgroup(number)
        script = _script(stage, [*_needed(), scratch], run_as, group)
        namespace = netns.ensure(f"gatekeeper-{number}") if netns.available() else None
    except BaseException:
        os.close(slot)
        raise
    unshare = ("unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
    networked = (*unshare, "/bin/sh", "-c", script, MARKER)
    note = f"isolated: account {account} (uid {run_as.uid}, this run's alone), "
    note += "own cgroup, " if group else "no cgroup v2 (its processes are killed by uid), "
    note += "own pid and "
    if namespace is None:
        note += "mount namespaces; network: not isolated (iproute2's `ip` not found)"
        return Confinement(networked, run_as, note, slot, None, networked, group)
    note += "mount and network namespaces (loopback only: no egress)"
    prefix = ("nsenter", f"--net={namespace}", *networked)
    return Confinement(prefix, run_as, note, slot, namespace, networked, group)


def kill_cgroup(group: Path) -> None:
    """Kill every process in the cgroup at once (the kernel's `cgroup.kill`, 5.14+; older
    kernels leave it to the uid kill that follows)."""
    with suppress(OSError):
        (group / "cgroup.kill").write_text("1")


def _cgroup_root() -> Path | None:
    """The cgroup2 mount (all of /sys/fs/cgroup on a v2 machine, .../unified on a hybrid)."""
    with suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def _cgroup(number: int) -> Path | None:
    """The slot's cgroup, made on first use; None where there is no writable cgroup2 (a
    container without its own cgroup namespace, a v1-only machine)."""
    root = _cgroup_root()
    if root is None:
        return None
    group = root / "gatekeeper" / f"run-{number}"
    try:
        group.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return group if (group / "cgroup.procs").exists() else None


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is `uid` until there is none; how many."""
    killed = 0
    for _ in range(_KILL_ROUNDS):
        found = [pid for pid in _pids() if _real_uid(pid) == uid]
        if not found:
            break
        for pid in found:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed += len(found)
        time.sleep(0.01)
    return killed


def _claim_slot() -> tuple[int, int]:
    """The lowest free slot: one account per concurrent run, so that runs cannot read or kill
    each other's processes and files. The lock dies with its process: a SIGKILLed run's
    slot is free again, and its leftovers are killed by the next run that takes it."""
    # One registry for the machine, whatever TMPDIR each run has: the accounts and network
    # namespaces the slots name are machine-wide too.
    directory = SLOTS_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise SandboxError(f"{directory} must be a directory only root can use: remove it")
    for number in range(_SLOTS):
        handle = os.open(directory / f"{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            continue
        return number, handle
    raise SandboxError(f"all {_SLOTS} run accounts are in use: too many concurrent runs")


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _real_uid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("Uid:")), None)
    return int(line.split()[1]) if line else None


def sweep() -> int:
    """Kill what runs under the account of a slot nobody holds: the leftovers of a gate that
    died (SIGKILL) before it could. A held slot's processes are a live run's and are left
    alone, whoever their parent is (a gate that is PID 1 in a container parents them all).
    Returns how many processes were killed."""
    if os.geteuid() != 0 or not SLOTS_DIR.is_dir():
        return 0
    killed = 0
    for lock in SLOTS_DIR.glob("*.lock"):
        try:
            uid = pwd.getpwnam(f"{RUN_ACCOUNT}-{lock.stem}").pw_uid
            handle = os.open(lock, os.O_RDWR)
        except (KeyError, OSError):
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live run's
        else:
            group = _cgroup(int(lock.stem))
            if group is not None:
                kill_cgroup(group)
            killed += kill_uid(uid)
        finally:
            os.close(handle)
    return killed


def _needed() -> list[Path]:
    """What the change must reach besides its checkout: the interpreter and its libraries."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    return sorted({Path(os.path.realpath(p)) for p in paths} | paths)


def _private() -> list[Path]:
    """World-writable places where the change could leave files behind or read another
    run's: in its mount namespace each is a fresh, empty tmpfs (what it needs bound back)."""
    places = [Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir())]
    places = [Path(os.path.realpath(p)) for p in places if os.path.isdir(p)]
    return sorted({p for p in places if not any(q in p.parents for q in places)})


def _script(keep: Path, needed: list[Path], run_as: RunAs, group: Path | None) -> str:
    """Runs as root inside the new namespaces, then runs "$@" as the account. `keep` is a
    staging directory outside every directory it hides; `group` the cgroup everything the
    command starts is born in."""
    lines = ["set -e"]
    if group is not None:
        lines.append(f"echo 0 > {_q(group / 'cgroup.procs')}")  # 0: this shell, and so its children
    private = _private()
    hidden: dict[Path, list[Path]] = {place: [] for place in private}
    for path in needed:
        closed = next((a for a in reversed(path.parents) if a in private or _closed(a)), None)
        if closed is None and _closed(path):
            closed = path
        if closed is not None and closed != path:
            hidden.setdefault(closed, []).append(path)
    for number, (closed, paths) in enumerate(sorted(hidden.items())):
        inner = [p for p in paths if not any(p != q and q in p.parents for q in paths)]
        staged = [keep / f"{number}-{index}" for index in range(len(inner))]
        for source, stage in zip(inner, staged, strict=True):
            lines += [f"mkdir -p {_q(stage)}", f"mount --rbind {_q(source)} {_q(stage)}"]
        mode = "1777" if closed in private else "0755"  # /tmp stays a /tmp: sticky, open
        lines.append(f"mount -t tmpfs -o mode={mode} gatekeeper {_q(closed)}")
        for source, stage in zip(inner, staged, strict=True):
            lines += [f"mkdir -p {_q(source)}", f"mount --rbind {_q(stage)} {_q(source)}"]
    # Not `exec`: this shell stays the namespace's init. An init ignores every signal it has
    # no handler for, so the command itself must not be it, or the SIGTERM that stops an API
    # would do nothing until the SIGKILL that follows; the shell exits with its status.
    lines.append(
        f'setpriv --reuid={run_as.uid} --regid={run_as.gid} --clear-groups --no-new-privs -- "$@"'
    )
    return "\n".join(lines)


def _closed(directory: Path) -> bool:
    """Whether others cannot traverse `directory` (no o+x): the account would stop there."""
    try:
        return not directory.stat().st_mode & 0o001
    except OSError:
        return False


def _q(path: Path) -> str:
    return shlex.quote(str(path))
