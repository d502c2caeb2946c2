"""The Verdict contract: its kept JSON Schema, exit codes, and fail-closed decisions."""

from __future__ import annotations

import json
from pathlib import Path

import bot
from bot.judging.decision import decide, root_cause
from bot.judging.verdict import EXIT_CODES, Criterion, Decision, Risk, Status, Verdict
from bot.policy.model import Decide


def test_kept_schema_matches_the_model():
    kept = json.loads((Path(bot.__file__).parent / "schemas" / "verdict.schema.json").read_text())
    assert kept == Verdict.model_json_schema(), "regenerate bot/schemas/verdict.schema.json"


def test_exit_codes_table():
    assert {
        Decision.approve: 0,
        Decision.reject: 1,
        Decision.error: 2,
        Decision.review: 3,
    } == EXIT_CODES


def crit(cid: str, status: Status, required: bool = True) -> Criterion:
    return Criterion(id=cid, title=cid, status=status, required=required)


def test_skipped_required_criterion_rejects():
    decision, reasons = decide(
        [crit("a", Status.passed), crit("b", Status.skipped)], Risk.low, Decide()
    )
    assert decision is Decision.reject
    assert "b did not run" in reasons[0]


def test_nothing_passed_never_approves():
    decision, _ = decide([], Risk.low, Decide())
    assert decision is Decision.reject
    decision, _ = decide([crit("a", Status.skipped, required=False)], Risk.low, Decide())
    assert decision is Decision.reject


def test_risk_maps_through_the_policy():
    rules = Decide(
        risk={"low": "approve", "medium": "review", "high": "review", "critical": "reject"}
    )
    passed = [crit("a", Status.passed), crit("b", Status.failed, required=False)]
    assert decide(passed, Risk.low, rules)[0] is Decision.approve
    assert decide(passed, Risk.medium, rules)[0] is Decision.review
    assert decide(passed, Risk.critical, rules)[0] is Decision.reject


def test_steps_that_did_not_run_are_folded_by_their_cause():
    skipped = [
        Criterion(
            id=f"s/{n}", title=n, status=Status.skipped, evidence="skipped: ${id} is undefined"
        )
        for n in ("read", "list", "delete")
    ]
    criteria = [crit("merge", Status.passed), crit("s/create", Status.failed), *skipped]
    decision, reasons = decide(criteria, Risk.low, Decide())
    assert decision is Decision.reject
    assert reasons == [
        "s/create failed: s/create",
        "3 required steps did not run (s/read, s/list, s/delete): skipped: ${id} is undefined",
    ]


def test_the_root_cause_is_the_gates_own_failure_first_then_the_first_step():
    step = Criterion(
        id="life/create",
        title="create",
        status=Status.failed,
        evidence='POST /x -> 500 in 5 ms; FAILED: expected 201, got 500; body: {"detail": "boom"}',
    )
    assert root_cause([crit("merge", Status.passed), step]) == (
        'life/create failed: POST /x -> 500 in 5 ms: {"detail": "boom"}'
    )
    gate = Criterion(
        id="migrate.idempotent", title="t", status=Status.failed, evidence="second run failed"
    )
    assert root_cause([step, gate]) == "migrate.idempotent failed: second run failed"
    assert root_cause([crit("merge", Status.passed)]) is None
