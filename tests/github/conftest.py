"""Fixtures for tests that talk to GitHub: a fake GitHub on loopback and a small git repository.

This directory deliberately has no ``__init__.py``: with one, pytest's importlib mode would
import it as a top-level package named ``github`` and shadow PyGithub.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake import FakeGitHub
from .openapi import SpecMissingError, github_spec

ALLOW_VIOLATIONS_MARKER = "allow_github_violations"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_VIOLATIONS_MARKER}: the test sends requests GitHub would refuse on purpose; "
        "fake_github then skips its final `violations == []` check",
    )


@pytest.fixture
def fake_github(request: pytest.FixtureRequest) -> Iterator[FakeGitHub]:
    """A started FakeGitHub; at teardown every request must have been one GitHub accepts.

    Tests of refusals either wrap them in ``fake.expect_violation(...)`` (preferred: states
    which refusal) or carry ``@pytest.mark.allow_github_violations``. Answers of the fake that
    depart from GitHub's description are always an error (they are bugs of the fake).
    """
    try:
        spec = github_spec()
    except SpecMissingError as error:
        pytest.fail(str(error), pytrace=False)
    with FakeGitHub(spec=spec) as fake:
        yield fake
        if request.node.get_closest_marker(ALLOW_VIOLATIONS_MARKER):
            fake.violations.clear()
        fake.assert_no_violations()


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout.strip()


def commit_all(repo: Path, message: str, when: str = "2024-05-01T12:00:00+00:00") -> str:
    """Commit every change with a fixed identity and date (shas do not depend on the machine)."""
    _git(repo, "add", "-A")
    stamp = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    _git(repo, "commit", "-q", "-m", message, env=stamp)
    return _git(repo, "rev-parse", "HEAD")


BUILDER_BRANCH = "builder/fix-orders"


@pytest.fixture
def demo_git_repo(tmp_path: Path) -> Path:
    """A small repository: ``main`` with an app and a migration, and ``builder/fix-orders``
    (two commits ahead) that edits the app, adds a migration and removes a file."""
    repo = tmp_path / "demo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "Demo Dev")
    _git(repo, "config", "user.email", "dev@example.com")
    _git(repo, "config", "commit.gpgsign", "false")
    (repo / "README.md").write_text("# demo\n\nA tiny service.\n")
    (repo / "app").mkdir()
    (repo / "app" / "main.py").write_text('def handler():\n    return "ok"\n')
    (repo / "db").mkdir()
    (repo / "db" / "001_init.sql").write_text("CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    (repo / "NOTES.txt").write_text("obsolete\n")
    commit_all(repo, "Initial commit", "2024-05-01T12:00:00+00:00")
    _git(repo, "checkout", "-q", "-b", BUILDER_BRANCH)
    (repo / "app" / "main.py").write_text(
        'def handler():\n    return "ok"\n\n\ndef orders():\n    return []\n'
    )
    commit_all(repo, "Add orders endpoint", "2024-05-02T12:00:00+00:00")
    (repo / "db" / "002_orders_total.sql").write_text(
        "ALTER TABLE orders ADD COLUMN total numeric NOT NULL DEFAULT 0;\n"
    )
    (repo / "NOTES.txt").unlink()
    commit_all(repo, "Add orders.total", "2024-05-03T12:00:00+00:00")
    _git(repo, "checkout", "-q", "main")
    return repo
