"""From criteria and risk to approve / review / reject, following the policy's rules."""

from __future__ import annotations

from fnmatch import fnmatchcase

from bot.judging.verdict import Criterion, Decision, Risk, Status
from bot.policy.model import Decide

HEADLINE = 200  # characters of the first failure's evidence in a summary


def is_required(criterion_id: str, step_required: bool, rules: Decide) -> bool:
    return step_required and any(fnmatchcase(criterion_id, p) for p in rules.required)


def decide(criteria: list[Criterion], risk: Risk, rules: Decide) -> tuple[Decision, list[str]]:
    """Fail closed: a required criterion that did not pass, passed or not run, rejects."""
    if not any(c.status is Status.passed for c in criteria):
        return Decision.reject, ["no criterion passed: nothing shows the change works"]
    blocking = [c for c in criteria if c.required and c.status is not Status.passed]
    if blocking:
        return Decision.reject, _blocking_reasons(blocking)
    decision = rules.for_risk(risk)
    return decision, [f"every required criterion passed; risk {risk.value} -> {decision.value}"]


def root_cause(criteria: list[Criterion]) -> str | None:
    """The required criterion that failed first, with the first line of its evidence: what a
    maintainer reads first. The gate's own criteria (merge, build, migrations, API start: ids
    without a suite) come before the suites' steps, which run on what they produced. None if
    none failed."""
    failures = [c for c in criteria if c.required and c.status is Status.failed]
    failed = next((c for c in failures if "/" not in c.id), failures[0] if failures else None)
    if failed is None:
        return None
    text = (failed.evidence or "").strip()
    return f"{failed.id} failed: {_headline(text.splitlines()[0]) if text else failed.title}"


def _headline(line: str) -> str:
    """An evidence line cut to what a summary needs: an HTTP step's request and answer with
    the body that says why (`POST /x -> 500 in 5 ms: {"detail": ...}`), else the line cut."""
    request, _, rest = line.partition("; ")
    if "; body: " in rest:
        line = f"{request}: {rest.rsplit('; body: ', 1)[1]}"
    return line if len(line) <= HEADLINE else line[: HEADLINE - 1] + "…"


def _blocking_reasons(blocking: list[Criterion]) -> list[str]:
    """One reason per failed criterion; the steps that did not run are folded, one line per
    cause (they did not run *because of* a failure above, or for a reason they share)."""
    reasons = []
    for c in blocking:
        if c.status is not Status.skipped:
            guard = f" — regression of {c.bug_id}" if c.bug_id else ""
            # The evidence's first line says why; the rest (a log's tail, a traceback) is in
            # the criterion, where the report shows it whole.
            why = (c.evidence or "").strip().splitlines()
            reasons.append(f"{c.id} failed{guard}: {why[0] if why else c.title}")
    by_cause: dict[str, list[Criterion]] = {}
    for c in blocking:
        if c.status is Status.skipped:
            by_cause.setdefault(c.evidence or "not run", []).append(c)
    for cause, skipped in by_cause.items():
        names = ", ".join(c.id for c in skipped[:6])
        more = f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""
        if len(skipped) == 1:
            what = f"{skipped[0].id} did not run"
        else:
            what = f"{len(skipped)} required steps did not run ({names}{more})"
        reasons.append(f"{what}: {cause}")
    return reasons
