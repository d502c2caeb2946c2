"""Fixtures for tests that talk to GitHub: a fake GitHub on loopback and a small git repository.

This directory deliberately has no ``__init__.py``: with one, pytest's importlib mode would
import it as a top-level package named ``github`` and shadow PyGithub.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ITEMS_CHECK, run_git

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


def commit_all(repo: Path, message: str, when: str = "2024-05-01T12:00:00+00:00") -> str:
    """Commit every change with a fixed identity and date (shas do not depend on the machine)."""
    run_git(repo, "add", "-A")
    stamp = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    run_git(repo, "commit", "-q", "-m", message, env=stamp)
    return run_git(repo, "rev-parse", "HEAD")


BUILDER_BRANCH = "builder/fix-orders"


@pytest.fixture
def demo_git_repo(tmp_path: Path) -> Path:
    """A small repository: ``main`` with an app and a migration, and ``builder/fix-orders``
    (two commits ahead) that edits the app, adds a migration and removes a file."""
    repo = tmp_path / "demo"
    repo.mkdir()
    run_git(repo, "init", "-q", "-b", "main")
    run_git(repo, "config", "user.name", "Demo Dev")
    run_git(repo, "config", "user.email", "dev@example.com")
    run_git(repo, "config", "commit.gpgsign", "false")
    (repo / "README.md").write_text("# demo\n\nA tiny service.\n")
    (repo / "app").mkdir()
    (repo / "app" / "main.py").write_text('def handler():\n    return "ok"\n')
    (repo / "db").mkdir()
    (repo / "db" / "001_init.sql").write_text("CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    (repo / "NOTES.txt").write_text("obsolete\n")
    commit_all(repo, "Initial commit", "2024-05-01T12:00:00+00:00")
    run_git(repo, "checkout", "-q", "-b", BUILDER_BRANCH)
    (repo / "app" / "main.py").write_text(
        'def handler():\n    return "ok"\n\n\ndef orders():\n    return []\n'
    )
    commit_all(repo, "Add orders endpoint", "2024-05-02T12:00:00+00:00")
    (repo / "db" / "002_orders_total.sql").write_text(
        "ALTER TABLE orders ADD COLUMN total numeric NOT NULL DEFAULT 0;\n"
    )
    (repo / "NOTES.txt").unlink()
    commit_all(repo, "Add orders.total", "2024-05-03T12:00:00+00:00")
    run_git(repo, "checkout", "-q", "main")
    return repo


# The repository the App and Actions tests serve: `octo/inventory` in the fake GitHub.
REPO = "octo/inventory"
POLICY = """\
version: 1
branches: {builder: ["builder/*"], target: ["main"]}
migrations: {mode: directory, directory: migrations}
tables: {items: {rows: 1000}}
suites: [../checks]
"""


def inventory_repo(tmp_path: Path) -> Path:
    """`main` with a policy, a check suite and one migration; `builder/add-name` adds one."""
    path = tmp_path / "inventory"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    run_git(path, "config", "user.name", "Dev")
    run_git(path, "config", "user.email", "dev@example.com")
    (path / ".github").mkdir()
    (path / ".github" / "gatekeeper.yml").write_text(POLICY)
    (path / "checks").mkdir()
    (path / "checks" / "schema.yml").write_text(ITEMS_CHECK)
    (path / "migrations").mkdir()
    (path / "migrations" / "001_items.sql").write_text(
        "CREATE TABLE items (id bigint PRIMARY KEY);\n"
    )
    commit_all(path, "base")
    run_git(path, "checkout", "-qb", "builder/add-name")
    (path / "migrations" / "002_name.sql").write_text(
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS name text;\n"
    )
    commit_all(path, "fix: add items.name")
    run_git(path, "checkout", "-q", "main")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """`inventory_repo` in the test's temporary directory."""
    return inventory_repo(tmp_path)


@pytest.fixture
def served(fake_github: FakeGitHub, repo: Path) -> FakeGitHub:
    """The fake GitHub serving `repo` as REPO, with pull request 7 from `builder/add-name` by
    `builder-bot`, who may write."""
    fake_github.add_repo(REPO, repo)
    fake_github.add_pull(REPO, 7, head="builder/add-name", user="builder-bot")
    fake_github.set_permission(REPO, "builder-bot", "write")
    return fake_github
