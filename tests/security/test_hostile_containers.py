"""Hostile branches through `gatekeeper validate --sandbox containers`: in `network: isolated`
(the default) the API container and the migration command reach their database and nothing
else — not the cloud metadata address, not the internet — and the run leaves no container
behind.

Needs a running engine with the local images of examples/containers/prepare.sh, and root
(entering the run's namespace); otherwise skipped with the reason. Every connection below is
refused by the kernel before a packet leaves: there is no route out of the namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.sandbox import images, netns
from bot.sandbox.containers import creator_alive
from tests.helpers import commit, git, items_repo

ENGINE_PROBLEM = images.engine_problem(images.LOCAL_IMAGES)
pytestmark = [
    pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=str(ENGINE_PROBLEM)),
    pytest.mark.skipif(netns.enter_problem() is not None, reason=str(netns.enter_problem())),
]
CANARY = "canary-containers-4d1e8b7f20"  # in the gate's environment, never passed
POLICY = """\
version: 1
sandbox: containers
migrations: {mode: directory, directory: migrations}
timeouts: {lock_timeout: 1s, statement_timeout: 20s, run: 120}
api: {command: "the image's CMD", health_path: /}
containers: {database: {image: gatekeeper/postgres, version: "15"}}
suites: [../checks]
"""
# Prints where it can connect (errno 0: connected), then serves: the API under test.
PROBE = """\
import http.server, os, socket, urllib.parse

url = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
print("interfaces=" + ",".join(name for _, name in socket.if_nameindex()), flush=True)
print("canary=" + str("canary-containers" in str(os.environ)), flush=True)
for name, address in {"metadata": ("169.254.169.254", 80), "outside": ("1.1.1.1", 443),
                      "database": (url.hostname, url.port)}.items():
    with socket.socket() as probe:
        probe.settimeout(5)
        print(f"{name}={probe.connect_ex(address)}", flush=True)
server = http.server.HTTPServer(("", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler)
server.serve_forever()
"""
DOCKERFILE = """\
FROM gatekeeper/python:3.11
COPY probe.py /srv/probe.py
WORKDIR /srv
CMD ["python3", "/srv/probe.py"]
"""


def _objects() -> set[str]:
    """Labelled containers and networks whose maker is gone from this machine: left behind."""
    client = images.connect()
    try:
        selector = {"label": images.LABEL_RUN}
        found = [(c.name, c.labels) for c in client.containers.list(all=True, filters=selector)]
        found += [(n.name, n.attrs.get("Labels")) for n in client.networks.list(filters=selector)]
    finally:
        client.close()
    return {name for name, labels in found if not creator_alive(labels)}


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """The items repository with the probing API's image on main; nothing left afterwards."""
    before = _objects()
    repo = items_repo(tmp_path, POLICY)
    commit(repo, {"probe.py": PROBE, "Dockerfile": DOCKERFILE}, "the API's image")
    yield repo
    assert _objects() - before == set()


def _validate(repo: Path, head: str, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bot", "validate", "--repo", str(repo)),
            *("--head", head, "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "MY_DEPLOY_SECRET": CANARY},
    )
    assert (out / "verdict.json").exists(), proc.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    outputs = proc.stdout + proc.stderr + (out / "report.md").read_text() + json.dumps(verdict)
    assert CANARY not in outputs
    return proc, verdict


@pytest.mark.slow
def test_the_api_container_reaches_its_database_and_nothing_else(repo: Path, tmp_path: Path):
    git(repo, "checkout", "-qb", "builder/probe", "main")
    commit(
        repo,
        {"migrations/002_more.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"},
        "x",
    )
    proc, verdict = _validate(repo, "builder/probe", tmp_path / "out")
    assert proc.returncode == 0, verdict["summary"]  # the checks reached the API and database
    log = verdict["evidence"]["logs"]["api"]
    assert "interfaces=lo\n" in log and "canary=False" in log
    assert "metadata=101\n" in log and "outside=101\n" in log  # ENETUNREACH, at once
    assert "database=0\n" in log
    isolation = verdict["evidence"]["isolation"]
    assert "share a network namespace holding only a loopback" in isolation
    assert "not isolated" not in isolation


@pytest.mark.slow
def test_the_migration_command_runs_in_the_containers_namespace(repo: Path, tmp_path: Path):
    """`migrations.mode: command` enters the run's namespace: its database answers, the
    metadata address does not; it runs as the run's account, as on the local sandbox."""
    probe = (
        "import os, socket, psycopg; "
        "print('interfaces=' + ','.join(n for _, n in socket.if_nameindex())); "
        "print('metadata=', socket.socket().connect_ex(('169.254.169.254', 80))); "
        "psycopg.connect(os.environ['DATABASE_URL']).execute('SELECT 1'); print('database=ok')"
    )
    command = f'python3 -c "{probe}"; echo uid=$(id -u) done; exit 3'
    migrations = json.dumps({"mode": "command", "command": command})
    policy = POLICY.replace("{mode: directory, directory: migrations}", migrations)
    commit(repo, {".github/gatekeeper.yml": policy}, "command migrations")
    git(repo, "checkout", "-qb", "builder/cmd", "main")
    commit(repo, {"README": "x\n"}, "x")
    proc, verdict = _validate(repo, "builder/cmd", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr  # the base's migrations fail: no baseline
    said = json.dumps(verdict)
    assert "interfaces=lo\\n" in said and "metadata= 101" in said and "database=ok" in said
    assert "uid=" in said and "uid=0 done" not in said
