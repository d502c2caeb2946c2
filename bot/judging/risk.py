"""The risk rating: observed effects and findings in, a level a maintainer can predict out.

The level is the highest factor's level, and nothing else: factors never add up, so ten
low notes stay low and two high ones stay high. Each factor is named after the rule that set
its level (the README's risk table, one row per id). What the run observed beats what a rule
guessed from the text: a re-run claim is disproved by a passing re-apply, and a table whose
production size nobody declared is rated as a small one, with the `tables:` entry that would
make the rating exact named in the factor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from bot.judging.lint.model import find_table, table_key
from bot.judging.verdict import Criterion, Disproved, Finding, Risk, RiskFactor, Status

# How long a deploy may block a table's reads and writes before anyone would notice.
BLOCKING_BUDGET_SECONDS = 2.0
# "Far over the budget": critical from this many budgets on.
FAR_OVER_BUDGET = 10
# A table rewrite's pace under ACCESS EXCLUSIVE on ordinary hardware (narrow rows, a couple of
# indexes): 2,000,000 declared rows predict ~4 s, over the budget; 10,000,000 rows ~20 s, far.
REWRITE_ROWS_PER_SECOND = 500_000
# The only migration rule whose finding alone is data loss; every other finding is a guess
# from the text and stays at most high (the dropped data itself is observed, see `_dropped`).
DATA_LOSS_RULES = frozenset({"ban-truncate"})
REAPPLY = "migrate.idempotent"
REAPPLY_RULE = "prefer-robust-stmts"
MODELS = "migrate.models"
# alembic check's operations that leave the data's shape alone: every table, column, type and
# nullability the code reads is as the models say; an index, a constraint, a foreign key or a
# comment differs. Anything else (a column, a table, a type) is code and schema disagreeing.
SHAPE_KEEPING_OPS = frozenset(
    {
        "add_index",
        "remove_index",
        "add_constraint",
        "remove_constraint",
        "add_fk",
        "remove_fk",
        "modify_comment",
        "add_table_comment",
        "remove_table_comment",
    }
)
_MODEL_OPS = re.compile(r"New upgrade operations detected: (.*)")
# An operation is a tuple in the listed diffs (nested in a list for column changes) whose first
# item is its name: `[('add_index', Index('ix', Column('title', …)))]`; the objects' own
# arguments follow a name (`Index(`), never a bracket or comma.
_OP_NAME = re.compile(r"(?:^|[\[,]\s*)\(\s*'(\w+)'")
_DROPPED_LINE = re.compile(
    r"^- (table|column|index|constraint|enum value|enum|extension|sequence) (\S+)"
)


@dataclass(frozen=True)
class Measured:
    """A declared table's blocking time, measured: what was timed, and the prediction."""

    how: str  # "12 ms at 1,000 rows, 24 ms at 10,000 rows → ~2.8 s at 2,000,000 declared"
    seconds: float  # predicted at the declared size
    lock: str  # the lock held meanwhile: ACCESS EXCLUSIVE, SHARE ROW EXCLUSIVE, SHARE


# The larger sample must take visibly longer, or the two timings are noise (a cold cache, a
# busy machine): at least this many milliseconds more, and this share of the smaller's time.
TIMING_NOISE_MS = 5.0
TIMING_NOISE_SHARE = 0.25


def predict_seconds(
    small: tuple[int, float], large: tuple[int, float], declared: int
) -> float | None:
    """Seconds a table of `declared` rows is held, from two timings (rows, milliseconds):
    the fixed cost taken out, the per-row rest scaled up. None when the larger sample did
    not take visibly longer: no prediction rather than one that says "instant"."""
    (n1, ms1), (n2, ms2) = small, large
    rise = ms2 - ms1
    if n2 <= n1 or rise < max(TIMING_NOISE_MS, TIMING_NOISE_SHARE * ms1):
        return None
    return (ms2 + rise / (n2 - n1) * max(declared - n2, 0)) / 1000


@dataclass
class Observed:
    """What the run saw. Every list is about objects that existed before the change."""

    criteria: list[Criterion] = field(default_factory=list)
    reapply_failed: bool = False
    dropped: list[str] = field(default_factory=list)  # schema diff lines of what is gone
    # dropped object -> places in the merge result's code that still name it
    still_referenced: dict[str, list[str]] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)  # tables whose storage was rewritten
    locked: dict[str, list[str]] = field(default_factory=dict)  # table -> DDL command tags
    edited_migrations: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    table_rows: dict[str, int] = field(default_factory=dict)  # declared, else in the sandbox
    declared_rows: dict[str, int] = field(default_factory=dict)  # the policy's `tables:`
    lines_changed: int = 0
    files_changed: int = 0
    slow_steps: list[str] = field(default_factory=list)
    # table -> its statements timed on the populated replay's two sample sizes and scaled to
    # its declared size; a rewritten table missing here is predicted from a rate.
    measured_blocking: dict[str, Measured] = field(default_factory=dict)
    blocking_budget: float = BLOCKING_BUDGET_SECONDS  # the policy's locks.max_blocking


@dataclass
class Rating:
    level: Risk
    factors: list[RiskFactor]
    # Findings the run contradicted, and the findings it did not (what the report annotates).
    disproved: list[Disproved]
    findings: list[Finding]

    @property
    def setter(self) -> RiskFactor | None:
        """The factor that set the level: the first at it (observations come before guesses)."""
        return next((f for f in self.factors if f.level is self.level), None)

    def named(self) -> str:
        """`risk high set by table-rewrite on public.items`: the summary's first words."""
        setter = self.setter
        if setter is None:
            return f"risk {self.level.value}: no factor raised it"
        where = f" on {setter.location}" if setter.location else ""
        return f"risk {self.level.value} set by {setter.id}{where}"


def assess(seen: Observed) -> Rating:
    findings, disproved = _disprove(seen)
    # The migration's own failures first: the suites' steps ran on what it produced.
    factors = [
        *_reapply(seen),
        *_criteria(seen.criteria),
        *_models(seen.criteria),
        *_migration(seen),
        *_findings(seen, findings),
        *_reach(seen),
    ]
    level = max((f.level for f in factors), key=lambda r: r.rank, default=Risk.low)
    return Rating(level, factors, disproved, findings)


# -- what the checks saw --------------------------------------------------------------------


def _criteria(criteria: list[Criterion]) -> list[RiskFactor]:
    """One factor per group of checks (a suite, or a pipeline stage) that did not pass.

    A required criterion that failed is critical: that path is broken the moment the change
    deploys. Steps that did not run because an earlier one failed are consequences, counted in
    the group's reason, not weighed again; required steps that only did not run are high
    (nothing shows them working). The re-apply has its own rule (`non-idempotent-migration`),
    and so do models that differ from the migrations (`models-differ`).
    """
    groups: dict[str, list[Criterion]] = {}
    # The gate's own stages (merge, build, migrate: no suite) before the suites.
    for c in sorted(criteria, key=lambda c: c.suite is not None):
        if c.status is Status.passed or c.id == REAPPLY or _models_failed(c):
            continue
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
        if not required:
            rule, level = "optional-checks", Risk.medium
        else:
            rule = "regression" if bug else "checks-failed"
            level = Risk.critical if any(c.required for c in failed) else Risk.high
        out.append(
            RiskFactor(id=rule, level=level, reason=f"{what}: {', '.join(parts)}", location=group)
        )
    return out


def _models_failed(c: Criterion) -> bool:
    return c.id == MODELS and c.status is Status.failed


def _models(criteria: list[Criterion]) -> list[RiskFactor]:
    """`alembic check` found models that the revisions do not create. Failed and required, it
    rejects the change whatever the level; the level says what deploying it would do. The
    schema deployed is what the revisions create, and what the code does on it is what the
    suites observed: an index, constraint or comment only in the models breaks nothing, a
    medium (the next autogenerate carries it into someone else's revision). A column, table
    or type the models expect differently is code and schema disagreeing on paths the suites
    may not reach: high, a person looks."""
    check = next((c for c in criteria if _models_failed(c)), None)
    if check is None:
        return []
    listed = _MODEL_OPS.search(check.evidence)
    ops = sorted(set(_OP_NAME.findall(listed.group(1)))) if listed else []
    shape_kept = bool(ops) and SHAPE_KEEPING_OPS.issuperset(ops)
    what = ", ".join(ops) if ops else "differences alembic check did not list"
    return [
        RiskFactor(
            id="models-differ",
            level=Risk.medium if shape_kept else Risk.high,
            reason=f"the models expect what no revision creates ({what}): "
            + (
                "tables, columns and types agree, so the code runs on the deployed schema"
                if shape_kept
                else "the code may read a shape the deployed schema does not have"
            ),
            location=MODELS,
        )
    ]


# -- what the database saw ------------------------------------------------------------------


def _size(seen: Observed, table: str) -> tuple[int | None, bool]:
    """(rows, declared): the policy's declared size, else the sandbox's count (not declared)."""
    declared = find_table(table, seen.declared_rows)
    if declared is not None:
        return seen.declared_rows[declared], True
    counted = find_table(table, seen.table_rows)
    return (seen.table_rows[counted] if counted is not None else None), False


def _declare(table: str) -> str:
    """The policy entry that would turn a guess about `table` into a prediction."""
    return f"`tables: {{{table_key(table)}: {{rows: N}}}}` in the policy"


def _migration(seen: Observed) -> list[RiskFactor]:
    return [
        *_dropped(seen),
        *_rewrites(seen),
        *_scans(seen),
        *(
            RiskFactor(
                id="edited-applied-migration",
                level=Risk.high,
                reason=f"{path} already ran on the base branch and was edited: "
                "databases that applied the old version will never see the change",
                location=path,
            )
            for path in seen.edited_migrations
        ),
        *_locks(seen),
    ]


def _reapply(seen: Observed) -> list[RiskFactor]:
    if not seen.reapply_failed:
        return []
    check = next((c for c in seen.criteria if c.id == REAPPLY), None)
    level = Risk.critical if check is None or check.required else Risk.medium
    seen_text = (check.evidence if check else "").strip().splitlines()
    return [
        RiskFactor(
            id="non-idempotent-migration",
            level=level,
            reason="the migration failed or changed the schema when applied a second time: "
            "a retried deploy or a second replica starting would fail"
            + (f" ({seen_text[0]})" if seen_text else ""),
            location=REAPPLY,
        )
    ]


def _dropped(seen: Observed) -> list[RiskFactor]:
    """Data loss is critical only when rows were there to lose: declared in `tables:`, or in
    the sandbox. A dropped object of unknown size is high (readers break), never critical.
    The schema diff shows a rename as removed + added: a RENAME statement makes it a rename."""
    renames = _renames(seen.findings)
    out = []
    for line in seen.dropped:
        match = _DROPPED_LINE.match(line)
        kind, name = match.groups() if match else ("object", line)
        refs = seen.still_referenced.get(line, [])
        more = " ..." if len(refs) > 5 else ""
        where = f"; the code still names it at {', '.join(refs[:5])}{more}" if refs else ""
        target = line.removeprefix("- ")
        renamed = renames.get(table_key(name))
        if kind in ("table", "column") and renamed is not None:
            out.append(
                RiskFactor(
                    id="renamed",
                    level=Risk.high,
                    reason=f"{target} was renamed, not dropped ({renamed}): no rows lost, but "
                    f"the release still running reads the old name{where}",
                    location=name,
                )
            )
            continue
        if kind in ("table", "column"):
            table = name if kind == "table" else name.rsplit(".", 1)[0]
            rows, declared = _size(seen, table)
            if rows:
                source = "declared" if declared else "in the sandbox"
                level = Risk.critical
                what = f"{target} was dropped with the {rows:,} rows it held ({source}): data lost"
            elif declared:
                level, what = Risk.high, f"{target} was dropped (declared empty: no rows lost)"
            else:
                level = Risk.high
                what = (
                    f"{target} was dropped; its production size is unknown: {_declare(table)} "
                    "makes this exact (critical if it holds rows)"
                )
        else:
            level = Risk.high
            what = f"{target} was dropped: readers and writers relying on it break"
        out.append(
            RiskFactor(
                id="destructive-ddl",
                level=level,
                reason=f"{what}; code still reading it breaks{where}",
                location=name,
            )
        )
    return out


def _renames(findings: list[Finding]) -> dict[str, str]:
    """Old name (`items`, `items.note`) -> where it was renamed, from the renaming rules'
    findings (their statements, parsed again: the diff alone cannot tell a rename)."""
    out = {}
    for f in findings:
        if f.rule not in ("renaming-column", "renaming-table") or not f.statement:
            continue
        try:
            node = parse_sql(f.statement)[0].stmt
        except (ParseError, IndexError):
            continue
        if not isinstance(node, ast.RenameStmt) or node.relation is None:
            continue
        table = table_key(
            f"{node.relation.schemaname}.{node.relation.relname}"
            if node.relation.schemaname
            else node.relation.relname
        )
        column = node.renameType == enums.ObjectType.OBJECT_COLUMN
        out[f"{table}.{node.subname}" if column else table] = f"RENAME at {f.file}:{f.line}"
    return out


def _rewrites(seen: Observed) -> list[RiskFactor]:
    """A rewrite blocks reads and writes for as long as the copy takes: predicted from the
    declared size, and rated against the budget. An undeclared table stays low."""
    out = []
    for table in seen.rewritten:
        rows, declared = _size(seen, table)
        if not declared or rows is None:
            level = Risk.low
            what = f"size unknown: {_declare(table)} predicts how long reads and writes wait"
        else:
            budget = seen.blocking_budget
            measured = seen.measured_blocking.get(table)
            seconds = measured.seconds if measured else rows / REWRITE_ROWS_PER_SECOND
            level = _against_budget(seconds, budget)
            verdict = "within" if seconds <= budget else "over"
            how = (
                f"measured: {measured.how}"
                if measured
                else f"~{seconds:.1f} s predicted for {rows:,} declared rows at "
                f"~{REWRITE_ROWS_PER_SECOND:,} rows/s"
            )
            what = f"{how}, {verdict} the {budget:g} s budget"
        out.append(
            RiskFactor(
                id="table-rewrite",
                level=level,
                reason=f"{table} was rewritten under ACCESS EXCLUSIVE: {what}",
                location=table,
            )
        )
    return out


def _against_budget(seconds: float, budget: float) -> Risk:
    """Within the budget low, over it high, far over it critical."""
    if seconds <= budget:
        return Risk.low
    return Risk.critical if seconds >= FAR_OVER_BUDGET * budget else Risk.high


# What waits while each lock is held.
_WAITS = {
    "ACCESS EXCLUSIVE": "reads and writes wait",
    "SHARE ROW EXCLUSIVE": "writes wait",
    "SHARE": "writes wait",
}


def _scans(seen: Observed) -> list[RiskFactor]:
    """A declared table read whole under a lock without a rewrite (a plain CREATE INDEX, SET
    NOT NULL, a constraint validated in place): its time measured on the populated replay.

    Over the budget it raises the level like a rewrite; within it, it is a low note and does
    not lower what the linter said from the declared size: a sort or a scan timed on 10,000
    rows says little about one that spills to disk at millions."""
    out = []
    for table, measured in sorted(seen.measured_blocking.items()):
        if table in seen.rewritten:
            continue  # the rewrite's own factor
        budget = seen.blocking_budget
        verdict = "within" if measured.seconds <= budget else "over"
        out.append(
            RiskFactor(
                id="blocking-lock",
                level=_against_budget(measured.seconds, budget),
                reason=f"{table} held under {measured.lock} ({_WAITS[measured.lock]}): "
                f"measured: {measured.how}, {verdict} the {budget:g} s budget",
                location=table,
            )
        )
    return out


def _locks(seen: Observed) -> list[RiskFactor]:
    """Locks taken on existing tables without a rewrite are brief: a low note, with the size."""
    out = []
    for table, tags in sorted(seen.locked.items()):
        rows, declared = _size(seen, table)
        size = f"{rows:,} rows declared" if declared and rows is not None else "size unknown"
        out.append(
            RiskFactor(
                id="lock-on-existing-table",
                level=Risk.low,
                reason=f"{', '.join(sorted(set(tags)))} on existing table {table} ({size}): "
                "brief without a rewrite",
                location=table,
            )
        )
    return out


# -- what the migration rules guessed -------------------------------------------------------


def _disprove(seen: Observed) -> tuple[list[Finding], list[Disproved]]:
    """Re-run claims fall when the migrations were applied a second time without an error or
    a schema change: the run did what the rule said would fail."""
    check = next((c for c in seen.criteria if c.id == REAPPLY), None)
    if check is None or check.status is not Status.passed:
        return list(seen.findings), []
    kept, disproved = [], []
    for finding in seen.findings:
        if finding.rule == REAPPLY_RULE:
            why = f"{REAPPLY} passed: {check.evidence or 'applied again without a change'}"
            disproved.append(Disproved(finding=finding, why=why))
        else:
            kept.append(finding)
    return kept, disproved


def _findings(seen: Observed, findings: list[Finding]) -> list[RiskFactor]:
    """One factor per rule and table (per statement for findings about no table).

    A finding is at most high unless it is data loss by itself (TRUNCATE). A medium finding
    about a lock on a table is low: its cost is how long the lock is held, and the linter
    already raised rewrites and scans of tables declared over a million rows to high; what is
    left is a brief lock, or one on a table of unknown size (the factor names the entry to add).
    """
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        key = table_key(f.table) if f.table else f"{f.file}:{f.line}:{f.message}"
        groups.setdefault((f.rule, key), []).append(f)
    out = []
    for (rule, _), group in groups.items():
        first = max(group, key=lambda f: f.level.rank)
        level = first.level if rule in DATA_LOSS_RULES else min(first.level, Risk.high, key=_rank)
        reason = first.message
        if level is Risk.medium and first.lock and first.table:
            level = Risk.low
            _, declared = _size(seen, first.table)
            if not declared:
                reason += f" (size unknown: {_declare(first.table)} rates the lock)"
        if len(group) > 1:
            lines = ", ".join(str(f.line) for f in group if f.line)
            reason += f" — {len(group)} statements on the same table, counted once (lines {lines})"
        location = f"{first.file}:{first.line}" if first.file and first.line else first.file
        out.append(RiskFactor(id=f"lint:{rule}", level=level, reason=reason, location=location))
    return out


def _rank(level: Risk) -> int:
    return level.rank


# -- how far the change reaches -------------------------------------------------------------


def _reach(seen: Observed) -> list[RiskFactor]:
    out = []
    if seen.lines_changed > 400 or seen.files_changed > 20:
        out.append(
            RiskFactor(
                id="wide-change",
                level=Risk.medium,
                reason=f"{seen.files_changed} files and {seen.lines_changed} lines changed: "
                "one bug id per fix should be a small change",
            )
        )
    out.extend(RiskFactor(id="slow-step", level=Risk.low, reason=step) for step in seen.slow_steps)
    return out
