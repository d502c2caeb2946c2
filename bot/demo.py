"""`gatekeeper demo`: the whole product on a repository anyone can build in seconds.

Builds the demo sessions API's git history (a main branch and builder-branch fixes), runs
the real pipeline on every fix, and compares each decision with what a careful maintainer
would decide. It exits non-zero when any decision differs, so it doubles as an end-to-end
test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from rich.console import Console
from rich.table import Table

from bot.gitrepo import resolve
from bot.job import Job
from bot.pipeline import validate
from bot.policy import load_policy
from bot.report import write_outputs
from bot.resources import data_path
from bot.sandbox.environment import PASS_ENV
from bot.sandbox.select import factory
from bot.verdict import Verdict

SECRET_ENV = "SESSIONS_JWT_SECRET"


def load_builder() -> ModuleType:
    """examples/ is data, not a package: load its build script by path."""
    path = data_path("examples") / "build_demo.py"
    spec = importlib.util.spec_from_file_location("gatekeeper_demo_builder", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(out: Path, *, as_json: bool, console: Console, sandbox: str = "local") -> int:
    """`sandbox`: local, or containers (the demo API built from its Dockerfile, PostgreSQL
    from an image); both must reach the same decisions."""
    # The demo API and the gate must agree on a signing secret; any value will do. The policy
    # hands it to the API, so the operator (the demo, here) passes it.
    os.environ.setdefault(SECRET_ENV, secrets.token_urlsafe(32))
    passed = [n for n in os.environ.get(PASS_ENV, "").split(",") if n]
    os.environ[PASS_ENV] = ",".join(dict.fromkeys([*passed, SECRET_ENV]))
    loaded = load_policy(data_path("policies") / "sessions-api.yml")
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gatekeeper-demo-") as tmp:
        repo = Path(tmp) / "sessions-api"
        cases = load_builder().build(repo)
        for case in cases:
            verdict = _validate_case(case, repo, loaded, console, sandbox)
            report, _ = write_outputs(verdict, out / case.name)
            matches = verdict.decision.value == case.expected_decision and (
                not case.expected_risk
                or (verdict.risk and verdict.risk.value in case.expected_risk)
            )
            rows.append((case, verdict, report, matches))
    total = time.monotonic() - started
    if as_json:
        sys.stdout.write(json.dumps(_as_json(rows, total), indent=2) + "\n")
    _print_table(rows, total, console)
    return 0 if all(matches for *_, matches in rows) else 1


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


def _validate_case(case, repo: Path, loaded, console: Console, sandbox: str) -> Verdict:
    job = case_job(case, repo, loaded)
    with console.status(f"{case.name}: starting") as status:
        return validate(
            job,
            repo,
            loaded,
            factory(sandbox),
            progress=lambda stage: status.update(f"{case.name}: {stage}"),
        )


def _expected(case) -> str:
    risk = "/".join(sorted(case.expected_risk, key=_risk_order)) if case.expected_risk else "any"
    return f"{case.expected_decision}, {risk}"


def _risk_order(level: str) -> int:
    return ["low", "medium", "high", "critical"].index(level)


def _print_table(rows, total: float, console: Console) -> None:
    table = Table(title=f"gatekeeper demo: {len(rows)} builder fixes in {total:.1f} s")
    for column in ("case", "expected", "decision", "risk", "seconds", "match"):
        table.add_column(column, no_wrap=True)
    for case, verdict, _report, matches in rows:
        table.add_row(
            case.name,
            _expected(case),
            verdict.decision.value,
            verdict.risk.value if verdict.risk else "-",
            f"{verdict.seconds:.1f}",
            "[green]yes[/]" if matches else "[red]NO[/]",
        )
    console.print(table)
    if rows:
        console.print(f"reports: {rows[0][2].parent.parent}/<case>/report.md", soft_wrap=True)
    for case, verdict, _report, matches in rows:
        if not matches:
            console.print(f"[red]{case.name}[/]: expected {_expected(case)}, got {verdict.summary}")


def _as_json(rows, total: float) -> dict:
    return {
        "seconds": round(total, 2),
        "all_match": all(matches for *_, matches in rows),
        "cases": [
            {
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
            for case, verdict, report, matches in rows
        ],
    }
