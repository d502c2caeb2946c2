"""Calibration: the gate's decisions and levels against a maintainer's labels.

Why: a gate that rejects healthy changes gets switched off, and one that approves harmful
ones is worse than none. `tests/data/verdicts/` holds labelled cases, each with the decision
and risk level a careful maintainer would give it and one line of why, written before the gate
was run on it. Two kinds, both through the real pipeline (`bot.engine.pipeline.validate`, the
local PostgreSQL sandbox):

- SQL-level cases (`base:`, `change:`): a git repository per case (`main`: the base
  migrations; `builder/<case>`: the change) under a directory-mode policy with no API;
- the example targets' cases (`example: <target>`, `case: <name>`): the repository that
  `examples/build_*.py` builds, each case validated the way `gatekeeper demo` validates it
  (`bot.cli.demo.validate_target`: the same builders, policies and sandbox).

It prints, over the whole corpus, the confusion matrix of decisions (expected x got) and of
levels, the false approval rate (a case labelled review or reject that the gate approved), the
false reject rate (a case labelled approve that the gate rejected) and the level agreement,
against the targets: 0 false approvals, at most 1 in 20 healthy cases rejected, the level
equal to the label in at least 9 of 10 cases; then one line per kind.

    .venv/bin/python bench/calibration.py [--kind sql|sessions-api|items-api ...] [--case NAME ...]

items-api builds a virtualenv with pip from the machine's package index (cached by
`requirements.txt` afterwards).

Exits 0 when every target is met, 1 when one is missed (each case that missed is listed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a clone: the gate's own package
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from bot.cli.demo import TARGETS, pass_secret, validate_target  # noqa: E402
from bot.engine.job import Job  # noqa: E402
from bot.engine.pipeline import validate  # noqa: E402
from bot.gitrepo import resolve  # noqa: E402
from bot.judging.verdict import Verdict  # noqa: E402
from bot.policy.loader import policy_at  # noqa: E402
from bot.sandbox.local import for_policy  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "verdicts"
DECISIONS = ("approve", "review", "reject")
LEVELS = ("low", "medium", "high", "critical")
# Targets (issue 16): no false approval, at most 1 in 20 healthy cases rejected, the level
# equal to the label in at least 9 of 10 cases.
MAX_FALSE_APPROVALS = 0
MAX_FALSE_REJECT_RATE = 1 / 20
MIN_LEVEL_AGREEMENT = 9 / 10
_IDENTITY = ("-c", "user.name=calibration", "-c", "user.email=calibration@localhost")
SQL = "sql"  # the kind of the SQL-level cases; an example case's kind is its target


@dataclass(frozen=True)
class Case:
    """One labelled SQL-level change: the base migrations, the change's, and what a
    maintainer says."""

    name: str
    why: str
    decision: str
    level: str
    base: list[str]
    change: list[str]
    # Replaces base migration files of the same position: an already-applied file edited.
    edited_base: list[str] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    reapply: bool = True
    kind: str = SQL

    def policy(self) -> str:
        """The directory-mode policy the case runs under (the defaults otherwise)."""
        lines = [
            "version: 1",
            "migrations: {mode: directory, directory: migrations, "
            f"reapply: {'true' if self.reapply else 'false'}}}",
            "timeouts: {lock_timeout: 2s, statement_timeout: 20s}",
        ]
        if self.tables:
            sizes = ", ".join(f"{t}: {{rows: {n}}}" for t, n in self.tables.items())
            lines.append(f"tables: {{{sizes}}}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ExampleCase:
    """One case of an example target (`examples/build_*.py`) and what a maintainer says: one
    decision and one level, where the builder's own case admits a set of levels or any."""

    name: str  # the label file's stem, <target>.<case>
    why: str
    decision: str
    level: str
    kind: str  # the target: a key of bot.cli.demo.TARGETS
    case: str  # the builder's case name


Labelled = Case | ExampleCase


@dataclass(frozen=True)
class Outcome:
    case: Labelled
    decision: str
    level: str | None
    summary: str
    seconds: float
    # Rules whose findings the run disproved (a re-run claim when the re-apply passed).
    disproved: tuple[str, ...] = ()

    @property
    def false_approval(self) -> bool:
        return self.decision == "approve" and self.case.decision != "approve"

    @property
    def false_reject(self) -> bool:
        return self.decision == "reject" and self.case.decision == "approve"

    @property
    def level_agrees(self) -> bool:
        return self.level == self.case.level


def load_cases(
    corpus: Path = CORPUS, names: Iterable[str] = (), kinds: Iterable[str] = ()
) -> list[Labelled]:
    """The corpus's cases, those named (file stems) and of the kinds given, else all."""
    wanted, wanted_kinds = set(names), set(kinds)
    unknown = wanted_kinds - {SQL, *TARGETS}
    if unknown:
        raise ValueError(f"no such kind(s): {', '.join(sorted(unknown))}")
    cases = []
    for path in sorted(corpus.glob("*.yml")):
        if wanted and path.stem not in wanted:
            continue
        case = _load_case(path, yaml.safe_load(path.read_text(encoding="utf-8")))
        if not wanted_kinds or case.kind in wanted_kinds:
            cases.append(case)
    missing = wanted - {c.name for c in cases}
    if missing:
        raise ValueError(f"no such case(s) of those kinds: {', '.join(sorted(missing))}")
    return cases


def _load_case(path: Path, data: dict) -> Labelled:
    expect = data["expect"]
    if expect["decision"] not in DECISIONS or expect["level"] not in LEVELS:
        raise ValueError(f"{path}: expect needs a decision in {DECISIONS}, a level in {LEVELS}")
    label = {
        "name": path.stem,
        "why": data["why"],
        "decision": expect["decision"],
        "level": expect["level"],
    }
    if "example" in data:
        if data["example"] not in TARGETS:
            raise ValueError(f"{path}: example must be one of {', '.join(TARGETS)}")
        return ExampleCase(**label, kind=data["example"], case=data["case"])
    return Case(
        **label,
        base=data["base"],
        change=data.get("change") or [],
        edited_base=data.get("edited_base") or [],
        tables=data.get("tables") or {},
        reapply=data.get("reapply", True),
    )


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *_IDENTITY, *args], cwd=repo, check=True, capture_output=True)


def _write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def build_repo(case: Case, root: Path) -> Path:
    """`root`/<case>: `main` holds the policy and the base migrations (001, 002, ...);
    `builder/<case>` adds the change's (101, 102, ...) and rewrites any edited base file."""
    repo = root / case.name
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    base = {f"migrations/{n:03d}_base.sql": sql for n, sql in enumerate(case.base, 1)}
    _write(repo, {".github/gatekeeper.yml": case.policy(), **base})
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    _git(repo, "checkout", "-qb", f"builder/{case.name}")
    edited = {f"migrations/{n:03d}_base.sql": sql for n, sql in enumerate(case.edited_base, 1)}
    change = {f"migrations/{100 + n:03d}_change.sql": sql for n, sql in enumerate(case.change, 1)}
    _write(repo, {**edited, **change})
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", f"change: {case.name}")
    return repo


def run_case(case: Case, root: Path) -> Outcome:
    """The case through the real pipeline, as `gatekeeper validate` would run it."""
    started = time.monotonic()
    repo = build_repo(case, root)
    head = f"builder/{case.name}"
    base_sha, head_sha = resolve(repo, "main"), resolve(repo, head)
    with policy_at(repo, base_sha) as loaded:
        job = Job(
            repository=case.name,
            base_ref="main",
            head_ref=head,
            base_sha=base_sha,
            head_sha=head_sha,
            trigger="calibration",
            policy_source=loaded.source,
        )
        verdict = validate(job, repo, loaded, for_policy)
    return outcome(case, verdict, time.monotonic() - started)


def outcome(case: Labelled, verdict: Verdict, seconds: float) -> Outcome:
    """What the gate said about `case`, in the terms its label is written in."""
    return Outcome(
        case=case,
        decision=verdict.decision.value,
        level=verdict.risk.value if verdict.risk else None,
        summary=verdict.summary,
        seconds=seconds,
        disproved=tuple(d.finding.rule for d in verdict.disproved),
    )


def run_examples(cases: list[ExampleCase], root: Path) -> list[Outcome]:
    """The example cases, each target's repository built once under `root` and its labelled
    cases validated as `gatekeeper demo` validates them; progress goes to stderr."""
    pass_secret()
    console = Console(stderr=True)
    outcomes = []
    for kind in dict.fromkeys(c.kind for c in cases):
        labels = {c.case: c for c in cases if c.kind == kind}
        started = time.monotonic()
        repo = root / f"example-{kind}"
        ran = validate_target(TARGETS[kind], repo, console=console, cases=set(labels))
        for built, verdict in ran:
            outcomes.append(outcome(labels.pop(built.name), verdict, time.monotonic() - started))
            started = time.monotonic()
        if labels:
            raise ValueError(f"{kind} has no case(s) {', '.join(sorted(labels))}")
    return outcomes


def run_all(cases: list[Labelled]) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="gatekeeper-calibration-") as tmp:
        examples = [c for c in cases if isinstance(c, ExampleCase)]
        sql = [run_case(c, Path(tmp)) for c in cases if isinstance(c, Case)]
        return sql + run_examples(examples, Path(tmp))


@dataclass(frozen=True)
class Scores:
    healthy: int
    unhealthy: int
    false_approvals: int
    false_rejects: int
    levels_agreeing: int
    total: int

    @property
    def false_approval_rate(self) -> float:
        return self.false_approvals / self.unhealthy if self.unhealthy else 0.0

    @property
    def false_reject_rate(self) -> float:
        return self.false_rejects / self.healthy if self.healthy else 0.0

    @property
    def level_agreement(self) -> float:
        return self.levels_agreeing / self.total if self.total else 0.0

    @property
    def met(self) -> bool:
        return (
            self.false_approvals <= MAX_FALSE_APPROVALS
            and self.false_reject_rate <= MAX_FALSE_REJECT_RATE
            and self.level_agreement >= MIN_LEVEL_AGREEMENT
        )


def score(outcomes: list[Outcome]) -> Scores:
    healthy = sum(o.case.decision == "approve" for o in outcomes)
    return Scores(
        healthy=healthy,
        unhealthy=len(outcomes) - healthy,
        false_approvals=sum(o.false_approval for o in outcomes),
        false_rejects=sum(o.false_reject for o in outcomes),
        levels_agreeing=sum(o.level_agrees for o in outcomes),
        total=len(outcomes),
    )


def matrix(pairs: Iterable[tuple[str, str]], labels: tuple[str, ...], title: str) -> str:
    """Rows: expected; columns: what the gate said (anything outside `labels` in 'other')."""
    counts = Counter(pairs)
    got_labels = [*labels, "other"]
    width = max(len(x) for x in [*got_labels, title]) + 2
    lines = [title.ljust(width) + "".join(g.rjust(width) for g in got_labels)]
    for expected in labels:
        cells = [counts[(expected, g)] for g in labels]
        cells.append(sum(n for (e, g), n in counts.items() if e == expected and g not in labels))
        lines.append(expected.ljust(width) + "".join(str(n).rjust(width) for n in cells))
    return "\n".join(lines)


def _kind_line(kind: str, outcomes: list[Outcome]) -> str:
    s = score(outcomes)
    decisions = sum(o.decision == o.case.decision for o in outcomes)
    seconds = sum(o.seconds for o in outcomes)
    return (
        f"{kind}: {s.total} cases in {seconds:.1f} s, decisions {decisions}/{s.total}, "
        f"levels {s.levels_agreeing}/{s.total}, false approvals {s.false_approvals}, "
        f"false rejects {s.false_rejects}"
    )


def render(outcomes: list[Outcome]) -> str:
    s = score(outcomes)
    kinds = dict.fromkeys(o.case.kind for o in outcomes)
    seconds = sum(o.seconds for o in outcomes)
    out = [
        f"{len(outcomes)} cases ({s.healthy} labelled approve, {s.unhealthy} review or reject) "
        f"in {seconds:.1f} s",
        "",
        matrix(((o.case.decision, o.decision) for o in outcomes), DECISIONS, "expected \\ got"),
        "",
        matrix(((o.case.level, o.level or "none") for o in outcomes), LEVELS, "level \\ got"),
        "",
        f"false approvals: {s.false_approvals}/{s.unhealthy} ({s.false_approval_rate:.0%}); "
        f"target {MAX_FALSE_APPROVALS}",
        f"false rejects:   {s.false_rejects}/{s.healthy} ({s.false_reject_rate:.0%}); "
        f"target at most {MAX_FALSE_REJECT_RATE:.0%}",
        f"level agreement: {s.levels_agreeing}/{s.total} ({s.level_agreement:.0%}); "
        f"target at least {MIN_LEVEL_AGREEMENT:.0%}",
        f"targets: {'met' if s.met else 'MISSED'}",
        "",
        *(_kind_line(kind, [o for o in outcomes if o.case.kind == kind]) for kind in kinds),
    ]
    misses = [o for o in outcomes if o.decision != o.case.decision or not o.level_agrees]
    if misses:
        out += ["", "cases that differ from their label:"]
        for o in misses:
            out.append(
                f"- {o.case.name}: expected {o.case.decision} {o.case.level}, got "
                f"{o.decision} {o.level} ({o.case.why})\n  gate: {o.summary}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case", action="append", default=[], help="run only this case (its file's stem)"
    )
    parser.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=[SQL, *TARGETS],
        help="run only the cases of this kind: the SQL-level ones or an example target's",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("GIT_TERMINAL_PROMPT", "0")
    try:
        cases = load_cases(names=args.case, kinds=args.kind)
    except ValueError as exc:
        parser.error(str(exc))
    outcomes = run_all(cases)
    print(render(outcomes))
    return 0 if score(outcomes).met else 1


if __name__ == "__main__":
    sys.exit(main())
