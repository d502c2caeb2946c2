"""The Verdict: the one result every renderer (report, status, check run, dashboard) reads.

It is the contract between the engine and the edges, so its JSON Schema is kept in the
repository (`bot/schemas/verdict.schema.json`) and a test fails when the two drift apart.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Decision(StrEnum):
    approve = "approve"
    review = "review"
    reject = "reject"
    # Not a judgement of the change: the gate could not reach one (infrastructure failed).
    error = "error"


class Risk(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Risk).index(self)


class Status(StrEnum):
    passed = "passed"
    failed = "failed"
    # A step that did not run. Required criteria that are skipped count as failed (fail closed).
    skipped = "skipped"


class Criterion(BaseModel):
    id: str = Field(description="Stable id, e.g. 'migrate.idempotent' or 'P1-DATABASE-001/list'.")
    title: str
    status: Status
    required: bool = True
    evidence: str = Field("", description="What was observed: values, log lines, timings.")
    duration_ms: float | None = None
    suite: str | None = Field(None, description="Check suite the criterion came from, if any.")
    bug_id: str | None = Field(None, description="Bug id of a regression suite, if any.")


class RiskFactor(BaseModel):
    """One reason for the rating. The rating is the highest factor's level, so each factor's
    level is what it alone would make the change (the README's risk rules, one row per id)."""

    id: str = Field(
        description="The rating rule that set the factor's level (a row of the README's risk "
        "table), e.g. 'destructive-ddl'; 'lint:<rule>' for a migration rule's finding."
    )
    level: Risk = Field(description="The risk this factor alone implies.")
    reason: str
    location: str | None = Field(None, description="file:line or table the factor is about.")


class Finding(BaseModel):
    """A migration finding that points at a file and line (check-run annotations read these)."""

    rule: str
    level: Risk
    message: str
    file: str | None = None
    line: int | None = None
    statement: str | None = None
    safe_alternative: str | None = None
    column: int | None = Field(None, description="1-based column of the statement's start.")
    table: str | None = Field(None, description="Table the finding is about, if one.")
    lock: str | None = Field(None, description="PostgreSQL lock mode the statement takes.")
    rewrites: bool = Field(False, description="The statement rewrites the whole table.")
    suppressed_reason: str | None = Field(
        None, description="Why the finding was suppressed (gatekeeper:ignore or policy)."
    )


class Disproved(BaseModel):
    """A migration rule's claim the run contradicted (a re-run failure when the re-apply
    passed): shown, with why, and left out of the rating."""

    finding: Finding
    why: str = Field(description="What the run observed that contradicts the finding.")


class Stage(BaseModel):
    name: str
    seconds: float
    ok: bool
    detail: str = ""
    started: float | None = Field(
        None,
        description="Seconds from the run's start to the stage's; stages run side by side, "
        "so this places them on one clock (bot/judging/timeline.py). None in verdicts written "
        "before it was recorded, whose stages ran one after another.",
    )
    within: str | None = Field(
        None,
        description="The stage this one ran inside ('build' for 'build base'); None for a "
        "stage of the run itself.",
    )


class Verdict(BaseModel):
    schema_version: int = 1
    decision: Decision
    risk: Risk | None = Field(description="None when the gate could not run (decision error).")
    summary: str = Field(description="One line a maintainer reads first.")
    reasons: list[str] = Field(default_factory=list, description="Why the decision was taken.")
    job: dict[str, Any] = Field(default_factory=dict, description="The Job that was validated.")
    criteria: list[Criterion] = Field(default_factory=list)
    risk_factors: list[RiskFactor] = Field(
        default_factory=list, description="Every reason for the rating; the risk is the highest."
    )
    findings: list[Finding] = Field(default_factory=list)
    disproved: list[Disproved] = Field(
        default_factory=list, description="Findings the run's observations contradicted."
    )
    stages: list[Stage] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="Compared values and captured artefacts (DDL, schema diff, log tails).",
    )
    started_at: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    def failed_criteria(self) -> list[Criterion]:
        return [c for c in self.criteria if c.status is not Status.passed and c.required]


# The command line's exit codes, one table shared by every entry point (documented in the README).
EXIT_CODES: dict[Decision, int] = {
    Decision.approve: 0,
    Decision.reject: 1,
    Decision.error: 2,
    Decision.review: 3,
}
