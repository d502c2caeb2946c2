"""The run's cgroup: everything the change starts is born in it and dies with it at once."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from bot.sandbox import confine

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="confinement needs root")


def test_the_changes_processes_are_born_in_the_runs_cgroup_and_killed_with_it(tmp_path: Path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with confine.prepare(scratch) as confinement:
        group = confinement.cgroup
        if group is None:
            assert "no cgroup v2" in confinement.note
            pytest.skip("no writable cgroup2 here: the uid kill is the fallback")
        assert "own cgroup" in confinement.note
        command = "(setsid sleep 300 &); sleep 300"
        process = subprocess.Popen([*confinement.prefix, "/bin/sh", "-c", command])
        deadline = time.monotonic() + 10
        while len(_members(group)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = _members(group)
        assert len(members) >= 3  # the confining shell, the command's shell, the daemon
        assert all(f"0::/gatekeeper/{group.name}\n" in _cgroup_of(p) for p in members)
        if not (group / "cgroup.kill").exists():
            pytest.skip("a kernel before 5.14: no cgroup.kill, the uid kill does it")
        confine.kill_cgroup(group)  # alone: the root-owned confining shell goes too
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _members(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _members(group) == []


def _members(group: Path) -> list[int]:
    return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]


def _cgroup_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""
