"""Shell commands from a policy (build steps, migration commands), run so none outlives us.

Each runs in its own process group, and the whole group is killed on timeout or on any
interruption: `sh -c` may fork, and a killed shell would leave its children behind.
"""

from __future__ import annotations

import contextlib
import os
import re
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
    running: set[subprocess.Popen] | None = None,
) -> Result:
    """`prefix` confines the command (bot/sandbox/confine.py): killing the group kills it.
    `running` holds the process while it runs, for `stop` from another thread."""
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
    if running is not None:
        running.add(process)
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
    finally:
        if running is not None:
            running.discard(process)


def stop(running: set[subprocess.Popen]) -> None:
    """Kill the process groups of the commands `run` is running with `running`: where no
    run account can be killed whole (not root), what another thread started."""
    for process in running.copy():
        _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


# The line that says what went wrong, as each runtime prints it last (or nearly last).
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Failure|Warning|Interrupt)\b.*"  # Python
    r"|[A-Za-z_][\w.]*\.[A-Za-z_]\w*: .+"  # a dotted exception name (Python, Java)
    r"|(?:Exception in thread|Caused by:|panic:|fatal error:|Error:|ERROR:?|FATAL:?).*)$"
)
# Lines runtimes print after the error that say nothing about it.
_AFTERWORD = re.compile(
    r"^\(Background on this error at: .*\)$|^\s|^at |^goroutine \d+|^exit status \d+$"
    r"|^\.\.\. \d+ more$"
)


def reason(output: str) -> str:
    """The one line that says why a command failed: the error line of a Python, Java or Go
    traceback (SQLAlchemy's "Background on this error at: …" and stack frames skipped), else
    the last line of output."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    for line in reversed(lines[-60:]):
        if _AFTERWORD.match(line):
            continue
        if _ERROR_LINE.match(line):
            return line.strip()
    return lines[-1].strip() if lines else ""
