"""The risk model's levels, pinned by the README's example for each level."""

from __future__ import annotations

from bot.risk import Observed, assess
from bot.verdict import Criterion, Finding, Risk, Status


def level(seen: Observed) -> Risk:
    return assess(seen)[0]


def test_low_an_additive_guarded_migration_on_a_small_table():
    # The demo's fix: ADD COLUMN tags + a GIN index on sessions (200,000 rows declared).
    seen = Observed(
        locked={"public.sessions": ["ALTER TABLE", "CREATE INDEX"]},
        table_rows={"public.sessions": 200_000},
        findings=[Finding(rule="require-concurrent-index-creation", level=Risk.low, message="m")],
        criteria=[Criterion(id="a", title="a", status=Status.passed)],
    )
    risk, score, factors = assess(seen)
    assert risk is Risk.low and score == 5
    assert {f.id for f in factors} == {
        "lock-on-existing-table",
        "lint:require-concurrent-index-creation",
    }


def test_medium_a_rewrite_of_a_table_of_unknown_size():
    seen = Observed(rewritten=["public.items"])
    assert level(seen) is Risk.medium


def test_high_a_rewrite_of_a_big_table_or_a_non_idempotent_migration():
    assert (
        level(Observed(rewritten=["public.events"], table_rows={"events": 5_000_000})) is Risk.high
    )
    assert level(Observed(reapply_failed=True)) is Risk.high


def test_high_a_failed_regression_guard_names_the_bug():
    failed = Criterion(
        id="P1-DATABASE-001/read",
        title="read",
        status=Status.failed,
        bug_id="P1-DATABASE-001",
        suite="P1-DATABASE-001",
    )
    skipped = failed.model_copy(update={"id": "P1-DATABASE-001/log", "status": Status.skipped})
    risk, _, factors = assess(Observed(criteria=[failed, skipped]))
    assert risk is Risk.high
    (factor,) = factors
    assert factor.id == "regression"
    assert (
        factor.reason
        == "regression guard for P1-DATABASE-001: 1 failed (P1-DATABASE-001/read), 1 did not run"
    )


def test_critical_data_loss():
    seen = Observed(dropped=["- column public.sessions.cluster_id text"])
    assert level(seen) is Risk.critical


def test_score_bands_raise_the_level():
    # Four medium lint findings (8 points each) add up past the high band (30).
    findings = [Finding(rule=f"r{i}", level=Risk.medium, message="m") for i in range(4)]
    risk, score, _ = assess(Observed(findings=findings))
    assert score == 32 and risk is Risk.high


def test_nothing_observed_is_low():
    assert assess(Observed()) == (Risk.low, 0, [])
