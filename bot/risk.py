"""The risk model: observed effects and findings in, an explained rating out.

Each factor carries the least level it implies on its own and points that add up; the
rating is the higher of the strongest factor and the score band. Both are printed in the
report, so a maintainer can see exactly why a change rated as it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.verdict import Criterion, Finding, Risk, RiskFactor, Status

# Score bands: at or above the threshold, at least that level.
BANDS: list[tuple[int, Risk]] = [(60, Risk.critical), (30, Risk.high), (12, Risk.medium)]
FINDING_POINTS = {Risk.low: 2, Risk.medium: 8, Risk.high: 25, Risk.critical: 50}
BIG_TABLE_ROWS = 1_000_000
HUGE_TABLE_ROWS = 10_000_000


@dataclass
class Observed:
    """What the run saw. Every list is about objects that existed before the change."""

    criteria: list[Criterion] = field(default_factory=list)
    reapply_failed: bool = False
    dropped: list[str] = field(default_factory=list)  # tables / columns that held data
    # dropped object -> places in the merge result's code that still name it
    still_referenced: dict[str, list[str]] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)  # tables whose storage was rewritten
    locked: dict[str, list[str]] = field(default_factory=dict)  # table -> DDL command tags
    edited_migrations: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    table_rows: dict[str, int] = field(default_factory=dict)  # declared, else observed
    lines_changed: int = 0
    files_changed: int = 0
    slow_steps: list[str] = field(default_factory=list)


def assess(seen: Observed) -> tuple[Risk, int, list[RiskFactor]]:
    factors = [
        *_criteria(seen.criteria),
        *_migration(seen),
        *_findings(seen.findings),
        *_reach(seen),
    ]
    score = sum(f.points for f in factors)
    level = max((f.level for f in factors), key=lambda r: r.rank, default=Risk.low)
    for threshold, band in BANDS:
        if score >= threshold and band.rank > level.rank:
            level = band
            break
    return level, score, factors


def _criteria(criteria: list[Criterion]) -> list[RiskFactor]:
    """One factor per group of checks (a suite, or a pipeline stage) that did not pass.

    Steps that did not run because an earlier one failed are consequences, not extra risk:
    they are counted in the group's reason, not weighed again.
    """
    groups: dict[str, list[Criterion]] = {}
    for c in criteria:
        if c.status is not Status.passed:
            groups.setdefault(c.suite or c.id.split("/")[0], []).append(c)
    out = []
    for group, items in groups.items():
        failed = [c for c in items if c.status is Status.failed]
        skipped = [c for c in items if c.status is Status.skipped]
        required = any(c.required for c in items)
        bug = next((c.bug_id for c in items if c.bug_id), None)
        parts = []
        if failed:
            parts.append(
                f"{len(failed)} failed ({', '.join(c.id for c in failed[:3])}"
                f"{' ...' if len(failed) > 3 else ''})"
            )
        if skipped:
            parts.append(f"{len(skipped)} did not run")
        what = f"regression guard for {bug}" if bug else group
        out.append(
            RiskFactor(
                id="regression" if bug else "checks-failed" if required else "optional-checks",
                level=Risk.high if required else Risk.medium,
                points=30 if required else 8,
                reason=f"{what}: {', '.join(parts)}",
                location=group,
            )
        )
    return out


def _size_level(rows: int | None, small: Risk, big: Risk, huge: Risk) -> Risk:
    if rows is None or rows < BIG_TABLE_ROWS:
        return small
    return huge if rows >= HUGE_TABLE_ROWS else big


def _rows(seen: Observed, table: str) -> int | None:
    short = table.split(".")[-1]
    return seen.table_rows.get(table, seen.table_rows.get(short))


def _rows_text(rows: int | None) -> str:
    return f"{rows:,} rows expected" if rows is not None else "size unknown"


def _migration(seen: Observed) -> list[RiskFactor]:
    out = []
    if seen.reapply_failed:
        out.append(
            RiskFactor(
                id="non-idempotent-migration",
                level=Risk.high,
                points=30,
                reason="the migration failed or changed the schema when applied a second time; "
                "a retried deploy or a second replica starting would fail",
            )
        )
    for target in seen.dropped:
        refs = seen.still_referenced.get(target, [])
        where = (
            f"; the code still names it at {', '.join(refs[:5])}"
            + (" ..." if len(refs) > 5 else "")
            if refs
            else ""
        )
        out.append(
            RiskFactor(
                id="destructive-ddl",
                level=Risk.critical,
                points=50,
                reason=f"{target} was dropped: its data is lost and code still reading it "
                f"breaks{where}",
                location=target,
            )
        )
    for table in seen.rewritten:
        rows = _rows(seen, table)
        out.append(
            RiskFactor(
                id="table-rewrite",
                level=_size_level(rows, Risk.medium, Risk.high, Risk.critical),
                points=20,
                reason=f"{table} was rewritten under ACCESS EXCLUSIVE ({_rows_text(rows)}): "
                "reads and writes wait for the whole copy",
                location=table,
            )
        )
    for table, tags in sorted(seen.locked.items()):
        rows = _rows(seen, table)
        out.append(
            RiskFactor(
                id="lock-on-existing-table",
                level=_size_level(rows, Risk.low, Risk.medium, Risk.high),
                points=3 if (rows or 0) < BIG_TABLE_ROWS else 12,
                reason=f"{', '.join(sorted(set(tags)))} on existing table {table} "
                f"({_rows_text(rows)}) takes locks that block traffic while it runs",
                location=table,
            )
        )
    for path in seen.edited_migrations:
        out.append(
            RiskFactor(
                id="edited-applied-migration",
                level=Risk.high,
                points=25,
                reason=f"{path} already ran on the base branch and was edited: "
                "databases that applied the old version will never see the change",
                location=path,
            )
        )
    return out


def _findings(findings: list[Finding]) -> list[RiskFactor]:
    return [
        RiskFactor(
            id=f"lint:{f.rule}",
            level=f.level,
            points=FINDING_POINTS[f.level],
            reason=f.message,
            location=f"{f.file}:{f.line}" if f.file and f.line else f.file,
        )
        for f in findings
    ]


def _reach(seen: Observed) -> list[RiskFactor]:
    out = []
    if seen.lines_changed > 400 or seen.files_changed > 20:
        out.append(
            RiskFactor(
                id="wide-change",
                level=Risk.medium,
                points=8,
                reason=f"{seen.files_changed} files and {seen.lines_changed} lines changed: "
                "one bug id per fix should be a small change",
            )
        )
    for step in seen.slow_steps:
        out.append(RiskFactor(id="slow-step", level=Risk.low, points=2, reason=step, location=None))
    return out
