"""From criteria and risk to approve / review / reject, following the policy's rules."""

from __future__ import annotations

from fnmatch import fnmatchcase

from bot.policy.model import Decide
from bot.verdict import Criterion, Decision, Risk, Status


def is_required(criterion_id: str, step_required: bool, rules: Decide) -> bool:
    return step_required and any(fnmatchcase(criterion_id, p) for p in rules.required)


def decide(criteria: list[Criterion], risk: Risk, rules: Decide) -> tuple[Decision, list[str]]:
    """Fail closed: a required criterion that did not pass, passed or not run, rejects."""
    if not any(c.status is Status.passed for c in criteria):
        return Decision.reject, ["no criterion passed: nothing shows the change works"]
    blocking = [c for c in criteria if c.required and c.status is not Status.passed]
    if blocking:
        reasons = []
        for c in blocking:
            guard = f" — regression of {c.bug_id}" if c.bug_id else ""
            did = "did not run" if c.status is Status.skipped else "failed"
            reasons.append(f"{c.id} {did}{guard}: {c.evidence or c.title}")
        return Decision.reject, reasons
    decision = rules.for_risk(risk)
    return decision, [f"every required criterion passed; risk {risk.value} -> {decision.value}"]
