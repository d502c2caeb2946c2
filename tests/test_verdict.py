"""The Verdict contract: its kept JSON Schema, exit codes, and fail-closed decisions."""

from __future__ import annotations

import json
from pathlib import Path

import bot
from bot.decision import decide
from bot.policy.model import Decide
from bot.verdict import EXIT_CODES, Criterion, Decision, Risk, Status, Verdict


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
