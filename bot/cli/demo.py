"""`gatekeeper demo`: the whole product on repositories anyone can build in seconds.

Builds each example target's git history (a main branch and builder-branch fixes), runs the
real pipeline on every fix, and compares each decision with what a careful maintainer would
decide. It exits non-zero when any decision differs, so it doubles as an end-to-end test.

Two targets, two ways of adopting the gate: `sessions-api` (start-up migrations) is judged by
a policy of this repository's own; `items-api` (FastAPI + SQLAlchemy + Alembic) carries its
policy and suites in its own `.github/`, read from the base branch as for any repository.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

from bot.engine.job import Job
from bot.engine.kept import KeptBase
from bot.engine.pipeline import validate
from bot.gitrepo import resolve
from bot.judging.verdict import Verdict
from bot.policy import LoadedPolicy, load_policy
from bot.policy.loader import policy_at
from bot.reporting import write_outputs
from bot.resources import data_path
from bot.sandbox.environment import PASS_ENV
from bot.sandbox.select import factory

SECRET_ENV = "SESSIONS_JWT_SECRET"


@dataclass(frozen=True)
class Target:
    name: str
    builder: str  # the build script under examples/
    policy: str | None  # under policies/; None: the repository's own, from the base branch


TARGETS = {
    t.name: t
    for t in (
        Target("sessions-api", "build_demo.py", "sessions-api.yml"),
        Target("items-api", "build_items.py", None),
    )
}


def load_builder(script: str = "build_demo.py") -> ModuleType:
    """examples/ is data, not a package: load its build script by path."""
    path = data_path("examples") / script
    spec = importlib.util.spec_from_file_location(f"gatekeeper_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pass_secret() -> None:
    """The demo API and the gate must agree on a signing secret; any value will do. The
    policy hands it to the API, so the operator (the demo, or a bench running its cases)
    passes it."""
    os.environ.setdefault(SECRET_ENV, secrets.token_urlsafe(32))
    passed = [n for n in os.environ.get(PASS_ENV, "").split(",") if n]
    os.environ[PASS_ENV] = ",".join(dict.fromkeys([*passed, SECRET_ENV]))


def validate_target(
    target: Target,
    repo: Path,
    *,
    console: Console,
    sandbox: str = "local",
    cases: Container[str] | None = None,
    kept: KeptBase | None = None,
) -> Iterator[tuple[Any, Verdict]]:
    """Build `target`'s repository at `repo` and validate its cases (those named in `cases`,
    else all) one after the other: the one path from an example case to a verdict, for the
    demo and for the calibration bench. Each case is the builder's `example_repo.Case`
    (examples/ is loaded by path, so it has no static type here). `kept`: the cases share
    the base the first one kept (bot/engine/kept.py), as a batch's runs do."""
    for case in load_builder(target.builder).build(repo):
        if cases is None or case.name in cases:
            with _policy(target, repo, case) as loaded:
                yield case, _validate_case(case, repo, loaded, console, sandbox, kept)


def run(
    out: Path,
    *,
    as_json: bool,
    console: Console,
    sandbox: str = "local",
    targets: tuple[str, ...] = tuple(TARGETS),
) -> int:
    """`sandbox`: local, or containers (the demo API built from its Dockerfile, PostgreSQL
    from an image); both must reach the same decisions. Reports go to out/<target>/<case>."""
    pass_secret()
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gatekeeper-demo-") as tmp:
        for target in (TARGETS[name] for name in targets):
            repo = Path(tmp) / target.name
            for case, verdict in validate_target(target, repo, console=console, sandbox=sandbox):
                report, _ = write_outputs(verdict, out / target.name / case.name)
                matches = verdict.decision.value == case.expected_decision and (
                    not case.expected_risk
                    or (verdict.risk and verdict.risk.value in case.expected_risk)
                )
                rows.append((target.name, case, verdict, report, matches))
    total = time.monotonic() - started
    if as_json:
        sys.stdout.write(json.dumps(_as_json(rows, total), indent=2) + "\n")
    _print_table(rows, total, console)
    return 0 if all(matches for *_, matches in rows) else 1


@contextmanager
def _policy(target: Target, repo: Path, case) -> Iterator[LoadedPolicy]:
    if target.policy is not None:
        yield load_policy(data_path("policies") / target.policy)
        return
    with policy_at(repo, resolve(repo, case.base)) as loaded:
        yield loaded


def case_job(case, repo: Path, loaded) -> Job:
    """The Job for one builder case of the demo repository."""
    return Job(
        repository=str(repo),
        base_ref=case.base,
        head_ref=case.head,
        base_sha=resolve(repo, case.base),
        head_sha=resolve(repo, case.head),
        trigger="demo",
        policy_source=loaded.source,
    )


def _validate_case(
    case, repo: Path, loaded, console: Console, sandbox: str, kept: KeptBase | None
) -> Verdict:
    job = case_job(case, repo, loaded)
    with console.status(f"{case.name}: starting") as status:
        return validate(
            job,
            repo,
            loaded,
            factory(sandbox),
            progress=lambda stage: status.update(f"{case.name}: {stage}"),
            kept=kept,
        )


def _expected(case) -> str:
    risk = "/".join(sorted(case.expected_risk, key=_risk_order)) if case.expected_risk else "any"
    return f"{case.expected_decision}, {risk}"


def _risk_order(level: str) -> int:
    return ["low", "medium", "high", "critical"].index(level)


def _print_table(rows, total: float, console: Console) -> None:
    table = Table(title=f"gatekeeper demo: {len(rows)} builder fixes in {total:.1f} s")
    for column in ("target", "case", "expected", "decision", "risk", "seconds", "match"):
        table.add_column(column, no_wrap=True)
    for target, case, verdict, _report, matches in rows:
        table.add_row(
            target,
            case.name,
            _expected(case),
            verdict.decision.value,
            verdict.risk.value if verdict.risk else "-",
            f"{verdict.seconds:.1f}",
            "[green]yes[/]" if matches else "[red]NO[/]",
        )
    console.print(table)
    if rows:
        root = rows[0][3].parent.parent.parent
        console.print(f"reports: {root}/<target>/<case>/report.md", soft_wrap=True)
    for target, case, verdict, _report, matches in rows:
        if not matches:
            console.print(
                f"[red]{target}/{case.name}[/]: expected {_expected(case)}, got {verdict.summary}"
            )


def _as_json(rows, total: float) -> dict:
    return {
        "seconds": round(total, 2),
        "all_match": all(matches for *_, matches in rows),
        "cases": [
            {
                "target": target,
                "case": case.name,
                "expected_decision": case.expected_decision,
                "expected_risk": sorted(case.expected_risk or []),
                "decision": verdict.decision.value,
                "risk": verdict.risk.value if verdict.risk else None,
                "seconds": verdict.seconds,
                "match": matches,
                "report": str(report),
                "summary": verdict.summary,
            }
            for target, case, verdict, report, matches in rows
        ],
    }
