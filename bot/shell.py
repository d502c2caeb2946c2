"""Shell commands from a policy (build steps, migration commands), run so none outlives us.

Each runs in its own process group, and the whole group is killed on timeout or on any
interruption: `sh -c` may fork, and a killed shell would leave its children behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int | None  # None: timed out
    output: str  # stdout and stderr, interleaved as written


def run(
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    prefix: Sequence[str] = (),
) -> Result:
    """`prefix` confines the command (bot/sandbox/confine.py): killing the group kills it."""
    process = subprocess.Popen(
        [*prefix, "/bin/sh", "-c", command],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=max(timeout, 0.1))
        return Result(process.returncode, output)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        output, _ = process.communicate()
        return Result(None, output)
    except BaseException:
        _kill_group(process)
        process.wait()
        raise


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
