"""The base a batch keeps for its later runs (bot/engine/kept.py) against hostile code: its dump
stays out of the change's reach, and restoring it gives the base's objects no more privilege
than the change's own role has.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.engine.job import Job
from bot.engine.kept import KeptBase
from bot.engine.pipeline import validate
from bot.gitrepo import resolve
from bot.policy import load_policy
from bot.sandbox.select import factory
from tests.helpers import commit, git, items_repo

POLICY = """\
version: 1
migrations: {mode: directory, directory: migrations}
timeouts: {lock_timeout: 1s, statement_timeout: 20s, run: 60}
build: {commands: ['sh build.sh']}
"""
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the run account needs root")
# A row whose CHECK calls a function that refuses a superuser: the constraint is checked
# again when the row is restored, by whoever restores it.
NO_SUPERUSER = """\
CREATE FUNCTION not_superuser() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('is_superuser') = 'on' THEN
    RAISE EXCEPTION 'evaluated as a superuser';
  END IF;
  RETURN true;
END $$;
CREATE TABLE audited (id int PRIMARY KEY, CHECK (not_superuser()));
INSERT INTO audited VALUES (1);
"""


def _job(repo: Path, head: str) -> Job:
    base, sha = resolve(repo, "main"), resolve(repo, head)
    return Job(repository=str(repo), base_ref="main", head_ref=head, base_sha=base, head_sha=sha)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = items_repo(tmp_path, POLICY)
    commit(repo, {"build.sh": "true\n", "migrations/002_audited.sql": NO_SUPERUSER}, "audited")
    return repo


def _branch(repo: Path, name: str, files: dict[str, str]) -> None:
    git(repo, "checkout", "-qb", name, "main")
    commit(repo, files, name)
    git(repo, "checkout", "-q", "main")


@ROOT_ONLY
def test_the_kept_dump_is_out_of_the_changes_reach(repo: Path):
    """While the first run's dump waits for the batch's next runs, a change's build looks
    for it in every temp directory and prints what it finds."""
    _branch(repo, "builder/plain", {"migrations/003_x.sql": "SELECT 1;"})
    hunt = (
        'for d in /tmp /var/tmp "$TMPDIR"; do ls -la "$d" 2>&1; done\n'
        "find / -name 'base.dump' -readable 2>/dev/null | while read f; do head -c 5 \"$f\"; done\n"
        "cat /tmp/gatekeeper-base-*/base.dump 2>&1 | head -c 200\n"
        "exit 1\n"
    )
    _branch(repo, "builder/hunt", {"build.sh": hunt})
    loaded = load_policy(repo / ".github" / "gatekeeper.yml")
    with KeptBase() as kept:
        validate(_job(repo, "builder/plain"), repo, loaded, factory("local"), kept=kept)
        assert kept.record is not None and kept.record.dump.stat().st_size > 0
        directory = kept.record.dump.parent.name
        verdict = validate(_job(repo, "builder/hunt"), repo, loaded, factory("local"), kept=kept)
    build = next(b for b in verdict.evidence["build"] if b["label"] == "merge")
    assert build["exit"] == 1 and "total" in build["tail"], build["tail"]  # the hunt ran
    assert "PGDMP" not in build["tail"], build["tail"]  # a custom-format dump's first bytes
    # Its temp directory is its own: the gate's, and the dump in it, are not even listed.
    assert directory not in build["tail"], build["tail"]


def test_the_restore_runs_as_the_changes_role_not_a_superuser(repo: Path):
    """pg_restore re-checks the base's CHECK constraints on its rows; a superuser restoring
    them would run the base's function with every privilege (and here fail the restore)."""
    _branch(repo, "builder/plain", {"migrations/003_x.sql": "SELECT 1;"})
    loaded = load_policy(repo / ".github" / "gatekeeper.yml")
    with KeptBase() as kept:
        first = validate(_job(repo, "builder/plain"), repo, loaded, factory("local"), kept=kept)
        assert first.decision.value == "approve", first.summary
        again = validate(_job(repo, "builder/plain"), repo, loaded, factory("local"), kept=kept)
    assert again.evidence["base_kept"]["restored"] is True, again.evidence["base_kept"]
    assert again.decision == first.decision and again.risk == first.risk
