"""Run history against a real PostgreSQL: listing with filters and pages, one run, the
statistics, the retention purge, and `gatekeeper runs` on the command line.

Runs are inserted the way the service inserts them (`Store.accept`, then `Store.update`)
with a Verdict built from the model and its report rendered by the real renderer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.app import history
from bot.app.history import RunFilter
from bot.app.service import Service
from bot.app.settings import Settings
from bot.app.store import Store
from bot.engine.job import Job
from bot.github.auth import TokenCredentials
from bot.github.client import GitHubClient
from bot.judging.verdict import Criterion, Decision, Risk, RiskFactor, Stage, Status, Verdict
from bot.reporting import render_markdown

NOW = datetime.now(UTC)


def verdict(decision: str = "approve", risk: str | None = "low") -> Verdict:
    """A verdict shaped like the pipeline's: criteria, stages, a schema diff, a risk factor."""
    passed = decision in ("approve", "review")
    return Verdict(
        decision=Decision(decision),
        risk=Risk(risk) if risk else None,
        summary=f"{decision}: builder/add-note into main",
        reasons=["every required criterion passed" if passed else "migrate.idempotent failed"],
        job=Job(
            repository="octo/inventory",
            base_ref="main",
            head_ref="builder/add-note",
            base_sha="b" * 40,
            head_sha="a" * 40,
            pr_number=1,
        ).model_dump(mode="json"),
        criteria=[
            Criterion(id="merge.clean", title="Merges cleanly", status=Status.passed),
            Criterion(
                id="migrate.idempotent",
                title="Migrations apply twice",
                status=Status.passed if passed else Status.failed,
                evidence="second run: no change" if passed else "column note already exists",
            ),
        ],
        risk_factors=[RiskFactor(id="schema.additive", level=Risk.low, reason="adds a column")],
        stages=[
            Stage(name="merge", seconds=0.05, ok=True),
            Stage(name="sandbox", seconds=1.1, ok=True),
            Stage(name="migrate", seconds=0.3, ok=passed),
        ],
        evidence={
            "schema": {
                "diff": ["+ column public.items.note text NULL"],
                "destructive": [],
                "base_tables": 1,
                "head_tables": 1,
            }
        },
        started_at=NOW.isoformat(),
        seconds=1.45,
    )


def add_run(
    store: Store,
    *,
    repo: str = "octo/inventory",
    pr: int | None = 1,
    sha: str | None = None,
    state: str = "done",
    result: Verdict | None = None,
    detail: str = "",
    created: datetime | None = None,
    wait: float | None = 1.0,
    took: float | None = 2.0,
) -> int:
    """One run as the service leaves it: accepted, then started and finished."""
    sha = sha or uuid.uuid4().hex + "00000000"
    target = {
        "repository": repo,
        "pr_number": pr,
        "installation_id": 1,
        "head_sha": sha,
        "head_ref": "builder/add-note",
        "base_ref": "main",
    }
    run_id = store.accept(str(uuid.uuid4()), "pull_request", "synchronize", target, sha)
    assert run_id is not None
    created = created or NOW
    fields: dict[str, Any] = {"state": state, "detail": detail, "created_at": created}
    if wait is not None:
        fields["started_at"] = created + timedelta(seconds=wait)
        if took is not None and state not in ("queued", "running", "waiting", "dispatched"):
            fields["finished_at"] = fields["started_at"] + timedelta(seconds=took)
    if result is not None:
        fields.update(
            decision=result.decision.value,
            risk=result.risk.value if result.risk else None,
            verdict=result.model_dump(mode="json"),
            report=render_markdown(result),
        )
    store.update(run_id, **fields)
    return run_id


# -- listing -------------------------------------------------------------------------------


def test_list_is_newest_first_and_paginated(store):
    ids = [add_run(store, pr=n, result=verdict()) for n in range(1, 6)]
    first = history.list_runs(store, page=1, per_page=2)
    assert [r["id"] for r in first.items] == ids[::-1][:2]
    assert (first.total, first.pages) == (5, 3)
    last = history.list_runs(store, page=3, per_page=2)
    assert [r["id"] for r in last.items] == [ids[0]]
    past_the_end = history.list_runs(store, page=4, per_page=2)
    assert past_the_end.items == [] and past_the_end.total == 5
    row = first.items[0]
    assert row["summary"] == "approve: builder/add-note into main"
    assert row["seconds"] == pytest.approx(2.0) and row["queue_seconds"] == pytest.approx(1.0)
    assert "verdict" not in row and "report" not in row  # a listing stays small


def test_empty_history_has_one_empty_page(store):
    page = history.list_runs(store)
    assert (page.items, page.total, page.pages) == ([], 0, 1)


@pytest.mark.parametrize(
    ("page", "per_page"),
    [
        (0, 20),
        (1, 0),
        (1, history.MAX_PER_PAGE + 1),
        (-3, 5),
        # Its OFFSET would not fit PostgreSQL's bigint: refused here, not by the database.
        (10**30, 20),
        (history.MAX_PAGE + 1, 20),
    ],
)
def test_bad_pages_are_refused(store, page, per_page):
    with pytest.raises(ValueError):
        history.list_runs(store, page=page, per_page=per_page)


def test_filters_by_repo_pr_decision_and_state(store):
    approved = add_run(store, repo="octo/inventory", pr=1, result=verdict("approve", "low"))
    rejected = add_run(store, repo="octo/inventory", pr=2, result=verdict("reject", "high"))
    other = add_run(store, repo="octo/billing", pr=1, result=verdict("review", "medium"))
    crashed = add_run(store, pr=3, state="error", detail="git clone failed: 502")
    queued = add_run(store, pr=4, state="queued", wait=None)

    def ids(**filters: Any) -> list[int]:
        return [r["id"] for r in history.list_runs(store, RunFilter(**filters)).items]

    assert ids(repo="Octo/Inventory") == [queued, crashed, rejected, approved]
    assert ids(repo="octo/inventory", pr=1) == [approved]
    assert ids(pr=1) == [other, approved]
    assert ids(decision="reject") == [rejected]
    assert ids(decision="review", repo="octo/inventory") == []
    # A run that failed before any verdict is listed, and filtered, as decision `error`.
    assert ids(decision="error") == [crashed]
    assert ids(state="queued") == [queued]
    assert ids(repo="nobody/nothing") == []
    listed = {r["id"]: r for r in history.list_runs(store).items}
    assert listed[crashed]["decision"] == "error" and listed[queued]["decision"] is None


def test_unknown_filter_values_are_refused():
    with pytest.raises(ValueError, match="decision"):
        RunFilter(decision="maybe")
    with pytest.raises(ValueError, match="state"):
        RunFilter(state="lost")


def test_filter_values_are_parameters_not_sql(store):
    add_run(store, result=verdict())
    page = history.list_runs(store, RunFilter(repo="x' OR '1'='1"))
    assert page.total == 0


def test_one_run_with_its_verdict_and_report(store):
    run_id = add_run(store, result=verdict("reject", "high"))
    row = history.get_run(store, run_id)
    assert row is not None
    assert row["verdict"]["decision"] == "reject"
    assert row["verdict"]["evidence"]["schema"]["diff"] == ["+ column public.items.note text NULL"]
    assert "REJECT" in row["report"]
    assert row["target"]["head_ref"] == "builder/add-note"
    assert history.get_run(store, run_id + 1000) is None
    as_json = json.loads(json.dumps(history.jsonable(row)))
    assert as_json["created_at"].startswith(str(row["created_at"].year))


# -- statistics ----------------------------------------------------------------------------


def test_statistics(store):
    # Waits 1..10 s and run times 10..100 s on ten decided runs.
    for n in range(1, 11):
        risk = ("low", "medium", "high")[n % 3]
        decision = "approve" if risk == "low" else "review" if risk == "medium" else "reject"
        add_run(store, pr=n, result=verdict(decision, risk), wait=n, took=10 * n)
    add_run(store, pr=20, state="error", detail="git clone failed: 502\nfatal: remote error")
    add_run(store, pr=21, state="error", detail="git clone failed: 502\nother tail")
    add_run(store, pr=22, state="error", detail="the base branch's policy is invalid")
    add_run(store, pr=23, state="ignored", detail="branch feature/x is not a builder branch")
    add_run(store, pr=24, result=verdict("error", None))  # the gate's own verdict: error
    old = add_run(store, pr=25, state="queued", wait=None)
    store.update(old, superseded_by="f" * 40)
    add_run(store, pr=26, state="superseded", took=0.5)

    s = history.stats(store)
    assert s.runs == 17
    assert s.by_state == {"done": 11, "error": 3, "ignored": 1, "queued": 1, "superseded": 1}
    assert s.queue_wait.count == 16  # every run but the queued one started
    assert s.queue_wait.max == pytest.approx(10.0)
    assert s.run_time.count == 16
    assert s.run_time.max == pytest.approx(100.0)
    took = [10.0 * n for n in range(1, 11)] + [2.0] * 5 + [0.5]
    assert s.run_time.p50 == pytest.approx(percentile_cont(took, 0.5))
    assert s.run_time.p95 == pytest.approx(percentile_cont(took, 0.95))
    assert s.queue_wait.p50 == pytest.approx(percentile_cont([*range(1, 11), *[1.0] * 6], 0.5))
    # Concluded: 11 done + 3 error; failed: 3 errors and the error verdict.
    assert (s.concluded, s.failed) == (14, 4)
    assert s.failure_rate == pytest.approx(4 / 14)
    assert s.superseded == 2
    assert s.decisions_by_risk["low"] == {"approve": 3}
    assert s.decisions_by_risk["medium"] == {"review": 4}
    assert s.decisions_by_risk["high"] == {"reject": 3}
    assert s.decisions_by_risk["none"] == {"error": 1}
    reasons = [(r["state"], r["reason"], r["n"]) for r in s.exit_reasons]
    assert reasons[0] == ("error", "git clone failed: 502", 2)  # grouped on the first line
    assert ("ignored", "branch feature/x is not a builder branch", 1) in reasons

    narrowed = history.stats(store, repo="octo/billing")
    assert narrowed.runs == 0 and narrowed.failure_rate is None and narrowed.run_time.p50 is None
    recent = history.stats(store, since=NOW + timedelta(minutes=1))
    assert recent.runs == 0


def percentile_cont(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- retention -----------------------------------------------------------------------------


def _deliveries(store: Store) -> set[str]:
    with store.connect() as conn:
        return {r["id"] for r in conn.execute("SELECT id FROM gatekeeper.deliveries")}


def _age_delivery(store: Store, delivery_id: str, days: int) -> None:
    with store.connect() as conn:
        conn.execute(
            "UPDATE gatekeeper.deliveries SET received_at = now() - %s WHERE id = %s",
            (timedelta(days=days), delivery_id),
        )


def test_purge_deletes_old_finished_runs_and_their_deliveries(store):
    long_ago = NOW - timedelta(days=100)
    expired = add_run(store, pr=1, result=verdict(), created=long_ago)
    expired_error = add_run(store, pr=2, state="error", detail="boom", created=long_ago)
    # Old but still waiting for a maintainer: it owes GitHub a status, so it stays.
    waiting = add_run(store, pr=3, state="waiting", created=long_ago)
    recent = add_run(store, pr=4, result=verdict())
    store.record_delivery("old-ignored", "push", None, "ignored", "not a pull request")
    store.record_delivery("new-ignored", "push", None, "ignored", "not a pull request")
    by_run = {r: store.run(r)["delivery_id"] for r in (expired, expired_error, waiting, recent)}
    for delivery in [*by_run.values(), "old-ignored"]:
        _age_delivery(store, delivery, 100)
    _age_delivery(store, by_run[recent], 0)

    purged = history.purge(store, timedelta(days=90))

    assert purged == history.Purged(runs=2, deliveries=3)
    left = [r["id"] for r in history.list_runs(store).items]
    assert left == [recent, waiting]
    assert _deliveries(store) == {by_run[waiting], by_run[recent], "new-ignored"}
    assert history.purge(store, timedelta(days=90)) == history.Purged(0, 0)  # idempotent


def test_purge_refuses_a_retention_under_a_day(store):
    with pytest.raises(ValueError):
        history.purge(store, timedelta(hours=1))


def test_the_purge_applies_retention(store):
    expired = add_run(store, result=verdict(), created=NOW - timedelta(days=40))
    kept = add_run(store, result=verdict(), created=NOW - timedelta(days=20))
    settings = Settings(webhook_secret="s", database_url=store.database_url, retention_days=30)
    # Every run is final and posted, so the GitHub client is never called.
    service = Service(settings, store, GitHubClient("http://127.0.0.1:9", TokenCredentials("x")))
    service.purge()
    assert [r["id"] for r in history.list_runs(store).items] == [kept]
    assert history.get_run(store, expired) is None


# -- gatekeeper runs -----------------------------------------------------------------------


def gatekeeper(*args: str, database_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_runs_list_and_show(store):
    approved = add_run(store, pr=7, result=verdict("approve", "low"))
    rejected = add_run(store, pr=8, result=verdict("reject", "high"))
    url = store.database_url

    listed = gatekeeper("runs", "list", "--json", database_url=url)
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [rejected, approved]

    narrowed = gatekeeper("runs", "list", "--decision", "approve", "--json", database_url=url)
    assert [r["id"] for r in json.loads(narrowed.stdout)] == [approved]
    limited = gatekeeper("runs", "list", "--limit", "1", "--json", database_url=url)
    assert [r["id"] for r in json.loads(limited.stdout)] == [rejected]
    by_pr = gatekeeper("runs", "list", "--pr", "7", "--repo", "octo/inventory", database_url=url)
    assert by_pr.returncode == 0 and "octo/inventory" in by_pr.stdout
    assert "approve" in by_pr.stdout and "reject" not in by_pr.stdout

    shown = gatekeeper("runs", "show", str(rejected), database_url=url)
    assert shown.returncode == 0, shown.stderr
    assert "decision: reject  risk: high" in shown.stdout
    assert "Gatekeeper: REJECT" in shown.stdout  # then the Markdown report
    shown_json = gatekeeper("runs", "show", str(rejected), "--json", database_url=url)
    assert json.loads(shown_json.stdout)["verdict"]["decision"] == "reject"


def test_cli_runs_errors(store):
    missing = gatekeeper("runs", "show", "999999", database_url=store.database_url)
    assert missing.returncode == 2 and "no run 999999" in missing.stderr
    unset = gatekeeper("runs", "list", database_url=None)
    assert unset.returncode == 2 and "DATABASE_URL" in unset.stderr
    bad = gatekeeper("runs", "list", "--decision", "maybe", database_url=store.database_url)
    # Exit 2 once main() catches the usage errors of a typer that vendors click (0.29 does).
    assert bad.returncode != 0 and "'maybe' is not one of" in bad.stderr
    down = gatekeeper("runs", "list", database_url="postgresql://nobody@127.0.0.1:9/none")
    assert down.returncode == 2 and "cannot read the run history" in down.stderr
