"""The calibration corpus (tests/data/verdicts/) through the real pipeline, held to the
bench's targets — no false approval, at most 1 in 20 healthy cases rejected, the level equal
to the label in 9 of 10.

Here every SQL-level case runs, each in its own git repository and PostgreSQL (about 50 s on
2 cores): a target measured on a sample is no target. The example targets' cases are labelled
in the same corpus but run once in CI, by tests/cli/test_demo.py, which scores the demo's
verdicts against these labels with the same targets; each part meeting them means the whole
corpus does (zero plus zero is zero, and rates within bounds stay within them when pooled).
"""

from __future__ import annotations

import pytest

from tests.helpers import load_calibration

calibration = load_calibration()


def test_the_corpus_is_labelled_and_large_enough():
    cases = calibration.load_cases()
    sql = [c for c in cases if c.kind == calibration.SQL]
    assert len(sql) >= 20
    healthy = [c for c in sql if c.decision == "approve"]
    assert len(healthy) >= 10 and len(sql) - len(healthy) >= 10
    assert all(c.why.strip() for c in cases) and all(c.base for c in sql)
    kinds = {c.kind for c in cases}
    assert kinds == {calibration.SQL, *calibration.TARGETS}, "every example target is labelled"
    # The human validator's LOW for the reference report's guarded start-up fix is a label.
    reference = next(c for c in cases if c.name == "guarded-startup-ddl")
    assert (reference.decision, reference.level) == ("approve", "low")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("calibration")
    sql = calibration.load_cases(kinds=[calibration.SQL])
    return [calibration.run_case(case, root) for case in sql]


def test_no_false_approval(outcomes):
    assert [o.case.name for o in outcomes if o.false_approval] == []


def test_the_targets_are_met(outcomes):
    scores = calibration.score(outcomes)
    assert scores.met, calibration.render(outcomes)
    assert scores.false_reject_rate <= 1 / 20
    assert scores.level_agreement >= 0.9


def test_every_summary_names_the_factor_that_set_the_level(outcomes):
    for o in outcomes:
        assert f"risk {o.level} " in o.summary or f"risk {o.level}:" in o.summary, o.summary
        assert " set by " in o.summary or "no factor raised it" in o.summary, o.summary


def test_a_rerun_claim_the_reapply_contradicts_is_disproved(outcomes):
    (renamed,) = [o for o in outcomes if o.case.name == "rename-index-if-exists"]
    assert renamed.disproved == ("prefer-robust-stmts",)
    assert (renamed.decision, renamed.level) == ("approve", "low")


def test_the_matrix_counts_expected_against_got():
    text = calibration.matrix(
        [("approve", "approve"), ("reject", "approve"), ("reject", "error")],
        calibration.DECISIONS,
        "expected \\ got",
    )
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:]}
    assert rows["approve"] == ["1", "0", "0", "0"]
    assert rows["reject"] == ["1", "0", "0", "1"]
