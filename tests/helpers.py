"""Small helpers several test modules share: git in a scratch repository, the tiny inventory
policy and check, waiting for a `gatekeeper serve` process, interrupting a child process, the
calibration bench.

Import it as ``tests.helpers`` (tests/github has no ``__init__.py``; see its conftest).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil

# GitHub's real webhook payloads and its OpenAPI description, copied into the repository
# (tests/fixtures/github/*/SOURCE.md says from where), so a clone with nothing beside it tests.
GITHUB_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "github"
WEBHOOKS = GITHUB_FIXTURES / "webhooks"

# The policy and check of the tiny repository with one `items` table several tests validate.
ITEMS_POLICY = """\
version: 1
migrations: {mode: directory, directory: migrations}
timeouts: {lock_timeout: 1s, statement_timeout: 20s}
tables: {items: {rows: 1000}}
suites: [../checks]
"""
ITEMS_CHECK = """\
id: schema
title: The items table answers
steps:
  - id: items
    sql: {query: "SELECT count(*) AS n FROM items"}
    expect: {rows: 1}
"""


def run_git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`git ARGS` in `cwd`; its stripped output. Fails the test if git fails."""
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout.strip()


def git(repo: Path, *args: str) -> str:
    """`run_git` with a throwaway identity, for repositories that configure none."""
    return run_git(repo, "-c", "user.name=t", "-c", "user.email=t@t", *args)


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    """Write `files` (dedented) into `repo` and commit everything as `message`."""
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def items_repo(root: Path, policy: str, items: str = "id bigint PRIMARY KEY") -> Path:
    """`root`/repo: `main` with `policy` as its own, the items check and one migration
    creating `items (<items>)`; builder branches add to it."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(
        repo,
        {
            ".github/gatekeeper.yml": policy,
            "checks/schema.yml": ITEMS_CHECK,
            "migrations/001_items.sql": f"CREATE TABLE items ({items});\n",
        },
        "base",
    )
    return repo


def running_with(marker: str) -> list[int]:
    """Pids of the processes whose command line holds `marker` (hostile tests start their
    daemons as a copy of sleep named after a marker, to find them afterwards)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []):
            found.append(process.pid)
    return found


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI `app` served by uvicorn on a free loopback port, in a thread; yields its URL."""
    import uvicorn  # only the tests that serve an app need it

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when asked; races are unlikely)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_serving(
    process: subprocess.Popen[str], url: str, *, timeout: float, what: str, every: float = 0.1
) -> None:
    """Polls `url` every `every` seconds until it answers 200. Fails with the process's output
    if the process exits first, or with the message `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stdout.read() if process.stdout else None
        with suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, what
        time.sleep(every)


def gatekeeper_process(*args: str, env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    """`gatekeeper ARGS` (this interpreter's `-m bot`) as a process, its output (stdout and
    stderr together) on a text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


@contextmanager
def reaped(child: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`child`, killed and waited for when the block ends, however it ends."""
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def interrupt_after(child: subprocess.Popen, delay: float) -> None:
    """Ctrl-C `child` after `delay` seconds and wait for it; killed if it outlives a minute."""
    with reaped(child):
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)


def load_calibration() -> ModuleType:
    """bench/calibration.py, the corpus's loader and scorer: bench/ is scripts, not a package,
    so it is loaded by path, once (the tests that score against the labels share its types)."""
    name = "gatekeeper_bench_calibration"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "bench" / "calibration.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
