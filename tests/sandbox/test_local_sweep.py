"""What a SIGKILLed owner leaves behind is swept at the next start, and nothing else is.

Real processes throughout. Every sandbox lives in a temp root of this module's own, so the
sweeps here can never touch the sandboxes of runs going on beside these tests.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox import local
from bot.sandbox.base import ApiSpec
from bot.sandbox.local import LocalSandbox, sweep
from tests.sandbox.test_local import assert_gone, processes_in_group

# Starts a sandbox (and, given a directory, an API serving it), says where they are, and
# waits to be killed.
CHILD = """
import json, shlex, sys, time
from pathlib import Path
from typing import Any
from bot.sandbox.base import ApiSpec
from bot.sandbox.local import LocalSandbox

sandbox = LocalSandbox()
sandbox.start()
if len(sys.argv) > 1:
    command = f"exec {shlex.quote(sys.executable)} -m http.server --bind 127.0.0.1 $PORT"
    sandbox.start_api(Path(sys.argv[1]), ApiSpec(command=command, health_path="/"), "demo")
pids = {"postgres": sandbox.postgres_pid, "api": sandbox.api_pid}
print(json.dumps({"tmpdir": str(sandbox.tmpdir), **pids}), flush=True)
time.sleep(300)
"""


@pytest.fixture(scope="module")
def module_root() -> Iterator[Path]:
    """Shared by the module so that the PostgreSQL cache in it is built only once. The
    sandbox's PostgreSQL account must be able to traverse it: pytest's tmp_path is 0700."""
    root = Path(tempfile.mkdtemp(prefix="gatekeeper-test-sweep-"))
    root.chmod(0o711)
    yield root
    sweep(root)
    shutil.rmtree(root)


@pytest.fixture
def root(
    module_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The temp root, for the sandboxes of this process too. pytest's own base temp dir is
    settled first: made while the root is patched in, it would go with the root."""
    tmp_path_factory.getbasetemp()
    monkeypatch.setattr(tempfile, "tempdir", str(module_root))
    return module_root


def killed_owner(root: Path, api_workdir: Path | None = None) -> dict[str, Any]:
    """The sandbox of a process that was SIGKILLed: its PostgreSQL (and API) still run."""
    args = [] if api_workdir is None else [str(api_workdir)]
    env = {**os.environ, "TMPDIR": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert processes_in_group(started["postgres"])
    assert Path(started["tmpdir"]).is_dir()
    return started


def owner_dir(root: Path, owner: tuple[int, int | None]) -> Path:
    """A sandbox's temp dir as `owner` would leave it, without any processes."""
    directory = Path(tempfile.mkdtemp(prefix="gatekeeper-", dir=root))
    record = {
        "pid_namespace": local._pid_namespace(),
        "owner": owner,
        "postgres": None,
        "api_group": None,
    }
    (directory / "owner.json").write_text(json.dumps(record))
    return directory


def dead() -> tuple[int, int | None]:
    """A process that has ended, as an owner file names it."""
    process = subprocess.Popen(["sleep", "60"])
    identity = local._identity(process.pid)
    process.kill()
    process.wait()
    return identity


def test_sweep_ends_and_removes_what_a_killed_owner_left(root: Path, tmp_path: Path) -> None:
    started = killed_owner(root, api_workdir=tmp_path)
    assert processes_in_group(started["api"])
    assert sweep(root) == [Path(started["tmpdir"])]
    assert_gone(started["postgres"])
    assert_gone(started["api"])
    assert not Path(started["tmpdir"]).exists()


def test_starting_a_sandbox_sweeps_first(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    started = killed_owner(root)
    with caplog.at_level(logging.WARNING, logger="gatekeeper.sandbox.local"), LocalSandbox():
        assert not Path(started["tmpdir"]).exists()
    assert_gone(started["postgres"])
    assert started["tmpdir"] in caplog.text


def test_a_live_owners_sandbox_is_left_alone(root: Path, tmp_path: Path) -> None:
    command = f"exec {shlex.quote(sys.executable)} -m http.server --bind 127.0.0.1 $PORT"
    with LocalSandbox() as sandbox:
        sandbox.start_api(tmp_path, ApiSpec(command=command, health_path="/"), "demo")
        assert sandbox.tmpdir is not None and sandbox.postgres_pid and sandbox.api_pid
        assert sandbox.tmpdir not in sweep(root)
        assert sandbox.tmpdir.is_dir()
        assert processes_in_group(sandbox.postgres_pid)
        assert processes_in_group(sandbox.api_pid)
        assert sandbox.psql("SELECT 1 AS one") == [{"one": 1}]


def test_an_owner_whose_pid_was_reused_is_gone(root: Path) -> None:
    """Our own pid, but started at another moment: some other process got the number."""
    with LocalSandbox() as sandbox:
        assert sandbox.tmpdir is not None and sandbox.postgres_pid is not None
        owner_file = sandbox.tmpdir / "owner.json"
        record = json.loads(owner_file.read_text())
        assert record["owner"] == [os.getpid(), local._start_time(os.getpid())]
        record["owner"][1] -= 1
        owner_file.write_text(json.dumps(record))
        assert sweep(root) == [sandbox.tmpdir]
        assert_gone(sandbox.postgres_pid)


def test_directories_without_a_dead_owner_are_left_alone(root: Path) -> None:
    unowned = Path(tempfile.mkdtemp(prefix="gatekeeper-", dir=root))
    alive = owner_dir(root, local._identity(os.getpid()))
    other_namespace = owner_dir(root, dead())
    record = json.loads((other_namespace / "owner.json").read_text())
    (other_namespace / "owner.json").write_text(json.dumps({**record, "pid_namespace": "x"}))
    abandoned = owner_dir(root, dead())
    assert sweep(root) == [abandoned]
    assert unowned.is_dir() and alive.is_dir() and other_namespace.is_dir()
    for directory in (unowned, alive, other_namespace):
        shutil.rmtree(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
def test_another_users_directory_is_not_trusted(root: Path) -> None:
    foreign = owner_dir(root, dead())
    os.chown(foreign, 65534, 65534)
    assert sweep(root) == []
    assert foreign.is_dir()
    shutil.rmtree(foreign)
