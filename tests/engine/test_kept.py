"""A batch's runs share one base (bot/engine/kept.py): the first run keeps it migrated, seeded
and checked, the later ones restore it. A restored base must judge a change exactly as a base
made in the run does: the example targets' cases meet their calibration labels on a restored
base, a dump that does not restore is made again, and the restore runs as the change's role.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from bot.cli.demo import TARGETS, pass_secret, validate_target
from bot.engine.job import Job
from bot.engine.kept import KeptBase
from bot.engine.pipeline import validate
from bot.gitrepo import resolve
from bot.policy import load_policy
from bot.sandbox.select import factory
from tests.helpers import ITEMS_POLICY, commit, git, items_repo, load_calibration
from tests.sandbox.test_containers import needs_engine

calibration = load_calibration()
ADD_NAME = "ALTER TABLE items ADD COLUMN IF NOT EXISTS name text;"
QUIET = Console(quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "cases"),
    [
        # Alembic: a revision graph read from the restored base's checkout (two heads), the
        # populated replay on a copy of the restored base (the backfill's UPDATE).
        ("items-api", ("additive-column", "two-heads", "backfill")),
        # Start-up migrations: the base's own start-up SQL is known from the kept log, so the
        # fix is not charged with it; the regression suites compare with the kept baseline.
        ("sessions-api", ("no-fix", "fix", "regression")),
    ],
)
def test_cases_on_a_restored_base_meet_their_labels(tmp_path: Path, target: str, cases):
    pass_secret()
    labels = {c.case: c for c in calibration.load_cases(kinds=[target])}
    with KeptBase() as kept:
        ran = list(
            validate_target(
                TARGETS[target], tmp_path / "repo", console=QUIET, cases=cases, kept=kept
            )
        )
        assert kept.record is not None and kept.record.base_sha
    assert sorted(case.name for case, _ in ran) == sorted(cases)
    for index, (case, verdict) in enumerate(ran):
        restored = verdict.evidence.get("base_kept", {}).get("restored", False)
        assert restored is (index > 0), (case.name, verdict.evidence.get("base_kept"))
        label = labels[case.name]
        assert verdict.decision.value == label.decision, (case.name, verdict.summary)
        assert verdict.risk is not None and verdict.risk.value == label.level, case.name
        if restored:
            # Nothing of the base ran again: no base build, schema, seed or checks.
            stages = {s.name for s in verdict.stages}
            assert "restore base" in stages and not stages & {"base schema", "seed"}
            assert not [b for b in verdict.evidence["build"] if b["label"] == "base"]
    # The restored runs compare with the kept baseline: the base's results, step by step, as
    # the run that made the base saw them.
    made, *restored_runs = (
        {row["id"]: row["base"] for row in v.evidence.get("baseline") or []} for _, v in ran
    )
    assert made
    for baseline in restored_runs:
        assert not baseline or baseline == {k: made[k] for k in baseline}
    assert any(restored_runs)


def _job(repo: Path, head: str) -> Job:
    return Job(
        repository=str(repo),
        base_ref="main",
        head_ref=head,
        base_sha=resolve(repo, "main"),
        head_sha=resolve(repo, head),
    )


def _branch(repo: Path, name: str, files: dict[str, str]) -> None:
    git(repo, "checkout", "-qb", name, "main")
    commit(repo, files, f"fix on {name}")
    git(repo, "checkout", "-q", "main")


def test_a_dump_that_does_not_restore_is_made_again(tmp_path: Path):
    repo = items_repo(tmp_path, ITEMS_POLICY)
    _branch(
        repo,
        "builder/name",
        {"migrations/002_name.sql": ADD_NAME},
    )
    _branch(repo, "builder/drop", {"migrations/002_drop.sql": "DROP TABLE IF EXISTS items;"})
    loaded = load_policy(repo / ".github" / "gatekeeper.yml")
    with KeptBase() as kept:
        first = validate(_job(repo, "builder/name"), repo, loaded, factory("local"), kept=kept)
        assert first.decision.value == "approve" and kept.record is not None
        kept.record.dump.write_bytes(b"not a dump")
        again = validate(_job(repo, "builder/drop"), repo, loaded, factory("local"), kept=kept)
        base = again.evidence["base_kept"]
        assert base["restored"] is False and "did not restore" in base["note"]
        assert "base schema" in {s.name for s in again.stages}
        # The run judged on a base it made, and kept that one for the runs after it.
        assert again.decision.value == "reject"
        assert kept.record.made_by == "builder/drop"
        third = validate(_job(repo, "builder/name"), repo, loaded, factory("local"), kept=kept)
        assert third.evidence["base_kept"]["restored"] is True
        assert third.decision == first.decision and third.risk == first.risk
        directory = kept.directory
        assert directory is not None and directory.stat().st_mode & 0o777 == 0o700
    assert not directory.exists()


@needs_engine
def test_the_containers_sandbox_keeps_and_restores_with_its_servers_own_tools(tmp_path: Path):
    """PostgreSQL 15 in its container, against the gate's embedded 18: the dump and the
    restore run in the database container (an 18 pg_restore writes SQL 15 refuses)."""
    repo = items_repo(tmp_path, ITEMS_POLICY)
    _branch(repo, "builder/name", {"migrations/002_name.sql": ADD_NAME})
    loaded = load_policy(repo / ".github" / "gatekeeper.yml")
    with KeptBase() as kept:
        verdicts = [
            validate(_job(repo, "builder/name"), repo, loaded, factory("containers"), kept=kept)
            for _ in range(2)
        ]
    first, again = verdicts
    assert "base_kept" not in first.evidence, first.evidence.get("base_kept")
    assert again.evidence["base_kept"]["restored"] is True, again.evidence["base_kept"]
    assert again.decision == first.decision and again.risk == first.risk, again.summary
    assert [c.status for c in again.criteria] == [c.status for c in first.criteria]
