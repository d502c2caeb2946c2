"""The risk rules, each pinned by the README's example for it: the level is the highest
factor's level, nothing adds up, unknown sizes never raise it, observations beat guesses."""

from __future__ import annotations

import pytest

from bot.judging.risk import Measured, Observed, assess, predict_seconds
from bot.judging.verdict import Criterion, Finding, Risk, Status

PASSED = Criterion(id="schema/items", title="items", status=Status.passed)


def reapply(status: Status, required: bool = True) -> Criterion:
    return Criterion(
        id="migrate.idempotent",
        title="a second application changes nothing",
        status=status,
        required=required,
        evidence="applied again: no error, schema unchanged",
    )


def finding(rule: str, level: Risk, table: str | None = "items", line: int = 1, **kw) -> Finding:
    return Finding(
        rule=rule, level=level, message=f"{rule} here", file="m.sql", line=line, table=table, **kw
    )


def test_low_the_demo_fix_an_additive_guarded_migration_on_a_declared_table():
    # ADD COLUMN tags + a GIN index on sessions (200,000 rows declared): a brief lock and two
    # low notes (the linter lowers lock findings on tables under a million rows).
    seen = Observed(
        locked={"public.sessions": ["ALTER TABLE", "CREATE INDEX"]},
        declared_rows={"sessions": 200_000},
        findings=[
            finding("require-concurrent-index-creation", Risk.low, "sessions", lock="SHARE"),
            finding("require-lock-timeout", Risk.low, "sessions", lock="ACCESS EXCLUSIVE"),
        ],
        criteria=[PASSED],
    )
    rating = assess(seen)
    assert rating.level is Risk.low
    assert rating.named() == "risk low set by lock-on-existing-table on public.sessions"
    lock = rating.factors[0]
    assert "200,000 rows declared" in lock.reason


def test_lows_and_mediums_never_add_up():
    # Ten medium lock findings on one table and four medium findings on others: still medium.
    findings = [
        finding("require-lock-timeout", Risk.medium, "events", line=n, lock="ACCESS EXCLUSIVE")
        for n in range(1, 11)
    ] + [finding(f"create-extension-{n}", Risk.medium, table=None, line=n) for n in range(4)]
    rating = assess(Observed(findings=findings, declared_rows={"events": 2_000_000}))
    assert rating.level is Risk.medium
    timeouts = [f for f in rating.factors if f.id == "lint:require-lock-timeout"]
    assert len(timeouts) == 1, "the same rule on the same table counts once"
    assert "10 statements on the same table, counted once" in timeouts[0].reason


def test_an_unknown_size_never_raises_the_level_and_names_the_entry_to_declare():
    seen = Observed(
        rewritten=["public.items"],
        findings=[
            finding("changing-column-type", Risk.medium, lock="ACCESS EXCLUSIVE", rewrites=True)
        ],
    )
    rating = assess(seen)
    assert rating.level is Risk.low
    assert all("`tables: {items: {rows: N}}`" in f.reason for f in rating.factors)


def test_rewrite_of_a_declared_table_is_rated_against_the_blocking_budget():
    def rewrite(rows: int) -> Risk:
        return assess(Observed(rewritten=["public.items"], declared_rows={"items": rows})).level

    assert rewrite(200_000) is Risk.low  # ~0.4 s, within the 2 s budget
    assert rewrite(2_000_000) is Risk.high  # ~4 s, over it
    assert rewrite(20_000_000) is Risk.critical  # ~40 s, far over it
    factor = assess(Observed(rewritten=["public.items"], declared_rows={"items": 2_000_000}))
    assert "~4.0 s predicted for 2,000,000 declared rows" in factor.factors[0].reason


def test_a_measured_scan_is_rated_against_the_budget_a_measured_rewrite_by_its_own_factor():
    def seen(seconds: float, rewritten: bool = False) -> Observed:
        measured = Measured(how="timed", seconds=seconds, lock="SHARE")
        return Observed(
            rewritten=["public.items"] if rewritten else [],
            declared_rows={"items": 5_000_000},
            measured_blocking={"public.items": measured},
        )

    assert [f.level for f in assess(seen(1.5)).factors] == [Risk.low]
    assert assess(seen(3.0)).level is Risk.high
    assert assess(seen(25.0)).level is Risk.critical
    factor = assess(seen(3.0)).setter
    assert factor is not None and factor.id == "blocking-lock"
    assert "held under SHARE (writes wait): measured: timed, over the 2 s budget" in factor.reason
    rewrite = assess(seen(3.0, rewritten=True))
    assert [f.id for f in rewrite.factors] == ["table-rewrite"]
    assert "measured: timed, over the 2 s budget" in rewrite.factors[0].reason


def test_a_prediction_needs_the_larger_sample_to_take_visibly_longer():
    # 12 ms at 1,000 rows, 24 ms at 10,000: 1.33 µs a row after the fixed cost.
    assert predict_seconds((1_000, 12.0), (10_000, 24.0), 2_000_000) == pytest.approx(2.68, 0.01)
    assert predict_seconds((1_000, 12.0), (10_000, 24.0), 5_000) == pytest.approx(0.024)
    # Noise: slower on the smaller sample, equal, or a rise within a quarter of the first.
    assert predict_seconds((1_000, 37.0), (10_000, 15.0), 50_000_000) is None
    assert predict_seconds((1_000, 23.0), (10_000, 23.0), 50_000_000) is None
    assert predict_seconds((1_000, 40.0), (10_000, 48.0), 50_000_000) is None
    assert predict_seconds((1_000, 1.0), (10_000, 4.0), 50_000_000) is None


def test_critical_a_dropped_column_that_held_rows():
    line = "- column public.sessions.cluster_id text"
    declared = assess(Observed(dropped=[line], declared_rows={"sessions": 200_000}))
    assert declared.level is Risk.critical
    assert "200,000 rows it held (declared)" in declared.factors[0].reason
    in_sandbox = assess(Observed(dropped=[line], table_rows={"public.sessions": 3}))
    assert in_sandbox.level is Risk.critical
    # Nobody knows the production size and the sandbox table was empty: high, not critical.
    unknown = assess(Observed(dropped=[line], table_rows={"public.sessions": 0}))
    assert unknown.level is Risk.high
    assert "`tables: {sessions: {rows: N}}`" in unknown.factors[0].reason


def test_lint_guesses_stay_at_most_high_but_truncate_is_data_loss():
    drop = finding("ban-drop-table", Risk.critical)
    assert assess(Observed(findings=[drop])).level is Risk.high
    truncate = finding("ban-truncate", Risk.critical)
    assert assess(Observed(findings=[truncate])).level is Risk.critical


def test_critical_a_failed_required_check_names_its_suite_or_regression_guard():
    failed = Criterion(
        id="P1-DATABASE-001/read",
        title="read",
        status=Status.failed,
        bug_id="P1-DATABASE-001",
        suite="P1-DATABASE-001",
    )
    skipped = failed.model_copy(update={"id": "P1-DATABASE-001/log", "status": Status.skipped})
    rating = assess(Observed(criteria=[failed, skipped]))
    assert rating.level is Risk.critical
    (factor,) = rating.factors
    assert factor.id == "regression"
    assert (
        factor.reason
        == "regression guard for P1-DATABASE-001: 1 failed (P1-DATABASE-001/read), 1 did not run"
    )
    optional = failed.model_copy(update={"required": False, "bug_id": None})
    assert assess(Observed(criteria=[optional])).level is Risk.medium


def test_a_failed_reapply_is_one_factor_critical_when_required():
    seen = Observed(reapply_failed=True, criteria=[reapply(Status.failed)])
    rating = assess(seen)
    assert rating.level is Risk.critical
    assert [f.id for f in rating.factors] == ["non-idempotent-migration"]
    optional = Observed(reapply_failed=True, criteria=[reapply(Status.failed, required=False)])
    assert assess(optional).level is Risk.medium


def test_a_passing_reapply_disproves_rerun_claims():
    claim = finding("prefer-robust-stmts", Risk.high, table=None)
    kept = finding("renaming-column", Risk.high)
    rating = assess(Observed(findings=[claim, kept], criteria=[reapply(Status.passed)]))
    assert [d.finding.rule for d in rating.disproved] == ["prefer-robust-stmts"]
    assert "migrate.idempotent passed" in rating.disproved[0].why
    assert rating.findings == [kept]
    assert [f.id for f in rating.factors] == ["lint:renaming-column"]
    # Without a re-apply the claim stands.
    assert assess(Observed(findings=[claim])).level is Risk.high


def test_the_setter_is_the_first_factor_at_the_level():
    seen = Observed(
        dropped=["- column public.items.name text"],
        declared_rows={"items": 1000},
        findings=[finding("ban-drop-column", Risk.high)],
    )
    assert assess(seen).named() == "risk critical set by destructive-ddl on public.items.name"


def test_nothing_observed_is_low():
    rating = assess(Observed())
    assert (rating.level, rating.factors, rating.named()) == (
        Risk.low,
        [],
        "risk low: no factor raised it",
    )


def test_a_medium_lock_finding_is_a_brief_lock_whatever_the_declared_size():
    # ADD COLUMN without lock_timeout on a declared 2,000,000-row table: a catalog change.
    timeout = finding("require-lock-timeout", Risk.medium, "items", lock="ACCESS EXCLUSIVE")
    rating = assess(Observed(findings=[timeout], declared_rows={"items": 2_000_000}))
    assert rating.level is Risk.low
    assert "tables:" not in rating.factors[0].reason, "the size is declared: nothing to add"


def test_a_renamed_column_is_not_data_loss():
    rename = finding(
        "renaming-column",
        Risk.high,
        statement="ALTER TABLE items RENAME COLUMN note TO description",
        line=3,
    )
    seen = Observed(
        dropped=["- column public.items.note text"],
        declared_rows={"items": 1000},
        findings=[rename],
    )
    rating = assess(seen)
    assert rating.level is Risk.high
    assert rating.factors[0].id == "renamed"
    assert "renamed, not dropped (RENAME at m.sql:3)" in rating.factors[0].reason


def models(listed: str, status: Status = Status.failed) -> Criterion:
    """migrate.models as the pipeline records a failed `alembic check` (its first line)."""
    return Criterion(
        id="migrate.models",
        title="the models match the migrated schema (alembic check)",
        status=status,
        evidence="the models differ from what the revisions create: ERROR "
        f"[alembic.util.messaging] New upgrade operations detected: {listed}\n"
        "INFO  [alembic.autogenerate.compare.constraints] Detected added index 'ix' on "
        "'('title',)'",
    )


def test_models_without_a_revision_rate_what_deploying_them_would_do():
    # items-api's model-without-revision: an index only the models declare breaks nothing.
    index = models(
        "[('add_index', Index('ix_item_title', Column('title', String(length=255), "
        "table=<item>, nullable=False)))]"
    )
    rating = assess(Observed(criteria=[index]))
    assert rating.level is Risk.medium
    (factor,) = rating.factors
    assert (factor.id, factor.location) == ("models-differ", "migrate.models")
    assert "(add_index)" in factor.reason, "the column's and the log's names are not operations"
    # A column the models expect and no revision creates: code and schema disagree.
    column = models(
        "[('add_column', None, 'user', Column('timezone', String(length=64))), "
        "('add_index', Index('ix_user_timezone'))]"
    )
    assert assess(Observed(criteria=[column])).level is Risk.high
    nullable = models("[[('modify_nullable', None, 'user', 'full_name', {}, True, False)]]")
    assert assess(Observed(criteria=[nullable])).level is Risk.high
    unlisted = models("").model_copy(update={"evidence": "FAILED: something else"})
    assert assess(Observed(criteria=[unlisted])).level is Risk.high
    # Not run is not a difference seen: a required step that did not run stays fail-closed.
    skipped = models("", status=Status.skipped)
    assert [(f.id, f.level) for f in assess(Observed(criteria=[skipped])).factors] == [
        ("checks-failed", Risk.high)
    ]
