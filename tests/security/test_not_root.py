"""The fallback where nothing can be isolated: Gatekeeper not run as root (a developer's
machine). The run still works, the change runs as the invoking user, and the report says so
instead of claiming an isolation it did not have."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from tests.helpers import ITEMS_POLICY, commit, git, items_repo

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="root is needed to become another user"),
]
NOBODY = 65534


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory the unprivileged user owns (pytest's tmp dirs are root's, 0700)."""
    place = Path(tempfile.mkdtemp(prefix="gatekeeper-not-root-"))
    place.chmod(0o755)
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_not_root_the_run_works_and_says_the_change_ran_unisolated(home: Path):
    repo = items_repo(home, ITEMS_POLICY + "build: {commands: ['echo built by uid=$(id -u)']}\n")
    git(repo, "checkout", "-qb", "builder/x", "main")
    commit(
        repo, {"migrations/002_note.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS n text;"}, "x"
    )
    git(repo, "checkout", "-q", "main")
    for directory, _, files in os.walk(home):
        for name in [".", *files]:
            os.chown(Path(directory) / name, NOBODY, NOBODY)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(home),
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    child = subprocess.run(
        [
            *("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"),
            *(sys.executable, "-m", "bot", "validate", "--repo", str(repo), "--head", "builder/x"),
            "--json",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 0, child.stderr
    verdict = json.loads(child.stdout)
    isolation = verdict["evidence"]["isolation"]
    assert isolation.startswith("not isolated: Gatekeeper does not run as root"), isolation
    build = next(b for b in verdict["evidence"]["build"] if b["label"] == "merge")
    assert f"built by uid={NOBODY}" in build["tail"]


def test_not_root_ctrl_c_during_the_builds_stops_both_at_once(home: Path):
    """No run account to kill whole: the build in the other thread is stopped by its
    process group, not waited out (its `sleep 30` would take 30 s)."""
    repo = items_repo(home, ITEMS_POLICY + "build: {commands: ['sleep 30']}\n")
    git(repo, "checkout", "-qb", "builder/x", "main")
    commit(repo, {"README": "x\n"}, "x")
    git(repo, "checkout", "-q", "main")
    for directory, _, files in os.walk(home):
        for name in [".", *files]:
            os.chown(Path(directory) / name, NOBODY, NOBODY)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(home)}
    child = subprocess.Popen(
        [
            *("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"),
            *(sys.executable, "-m", "bot", "validate", "--repo", str(repo), "--head", "builder/x"),
        ],
        cwd=Path(__file__).resolve().parents[2],
        env={**env, "GIT_CONFIG_GLOBAL": "/dev/null"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_sleeps(child.pid)) < 2:
            time.sleep(0.1)
        sleeps = _sleeps(child.pid)
        assert len(sleeps) == 2, "both builds never started"
        child.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = child.communicate(timeout=60)
        assert child.returncode == 130, stderr
        assert time.monotonic() - interrupted < 20
        assert not [p for p in sleeps if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        child.kill()
        child.wait()


def _sleeps(pid: int) -> list[psutil.Process]:
    """The builds' `sleep` processes among `pid`'s descendants."""
    found = []
    for process in psutil.Process(pid).children(recursive=True):
        with suppress(psutil.Error):
            if process.name() == "sleep":
                found.append(process)
    return found
