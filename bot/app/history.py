"""Run history: read-only queries over the service's tables, and the retention purge.

The dashboard, the JSON API and `gatekeeper runs` all read runs through here, so a filter
means the same thing everywhere. Nothing here writes a run's state: the service owns that;
this module only lists, summarises, and deletes what is past retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import psycopg

from bot.app.store import ACTIVE, Store
from bot.judging.verdict import Decision, Risk

# The edges (the dashboard's query parameters, `gatekeeper runs --state`) take these types,
# so every list of choices comes from here and from the Verdict's enums.
RunState = Literal[
    "queued",
    "running",
    "waiting",
    "blocked",
    "dispatched",
    "done",
    "error",
    "ignored",
    "superseded",
]
STATES: tuple[str, ...] = get_args(RunState)
DECISIONS = tuple(decision.value for decision in Decision)
RISKS = tuple(risk.value for risk in Risk)
MAX_PER_PAGE = 100
# Far past any history kept (a million pages of 100); keeps OFFSET inside PostgreSQL's bigint.
MAX_PAGE = 10**6
# The columns' own ranges: pr_number is an int, ids are bigints.
MAX_PR = 2**31 - 1
MAX_ID = 2**63 - 1

# A run that ended in `error` before any verdict has no decision column, yet to a maintainer
# it is the same outcome as a verdict of `error` (the gate could not decide), so both are
# listed, filtered and counted as decision `error`.
_DECISION = "COALESCE(decision, CASE WHEN state = 'error' THEN 'error' END)"

# The columns a listing shows: the verdict and report stay in the database until one run is
# asked for, since a verdict can be hundreds of kilobytes.
_SUMMARY_COLUMNS = f"""
    id, repository, pr_number, head_sha, state, {_DECISION} AS decision, risk, detail,
    superseded_by, delivery_id, created_at, started_at, finished_at,
    verdict ->> 'summary' AS summary,
    EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS seconds,
    EXTRACT(EPOCH FROM started_at - created_at)::float8 AS queue_seconds
"""


@dataclass(frozen=True)
class RunFilter:
    """What a listing is narrowed to; None means "any"."""

    repo: str | None = None
    pr: int | None = None
    decision: str | None = None
    state: str | None = None
    since: datetime | None = None  # created at or after
    # Only these repositories (lower-case owner/name): what a signed-in person may read.
    # None means every repository; an empty set, none.
    repos: frozenset[str] | None = None

    def __post_init__(self) -> None:
        # The edges validate first (422, click choices); this guards direct callers.
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
        if self.state is not None and self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.repo:
            # GitHub treats owner/name case-insensitively; so does the filter.
            clauses.append("lower(repository) = lower(%s)")
            params.append(self.repo)
        if self.pr is not None:
            clauses.append("pr_number = %s")
            params.append(self.pr)
        if self.decision:
            clauses.append(f"{_DECISION} = %s")
            params.append(self.decision)
        if self.state:
            clauses.append("state = %s")
            params.append(self.state)
        if self.since is not None:
            clauses.append("created_at >= %s")
            params.append(self.since)
        if self.repos is not None:
            clauses.append("lower(repository) = ANY(%s)")
            params.append(sorted(name.lower() for name in self.repos))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass
class Page:
    items: list[dict[str, Any]]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def list_runs(
    store: Store, filters: RunFilter | None = None, page: int = 1, per_page: int = 20
) -> Page:
    """One page of runs, newest first. A page past the end is empty, not an error, so a
    link kept from a longer listing still answers."""
    if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"page must be within 1..{MAX_PAGE} and per_page within 1..{MAX_PER_PAGE}")
    where, params = (filters or RunFilter()).where()
    with store.connect() as conn:
        total = conn.execute(f"SELECT count(*) AS n FROM gatekeeper.runs{where}", params).fetchone()
        rows = conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM gatekeeper.runs{where}"
            " ORDER BY id DESC LIMIT %s OFFSET %s",
            [*params, per_page, (page - 1) * per_page],
        ).fetchall()
    return Page(items=rows, total=int(total["n"]) if total else 0, page=page, per_page=per_page)


def get_run(store: Store, run_id: int) -> dict[str, Any] | None:
    """The run's summary columns plus its target, verdict and report; None if unknown."""
    with store.connect() as conn:
        return conn.execute(
            f"SELECT {_SUMMARY_COLUMNS}, target, check_run_id, workflow_run_id, deadline,"
            " verdict, report FROM gatekeeper.runs WHERE id = %s",
            (run_id,),
        ).fetchone()


@dataclass
class Durations:
    """Percentiles of one duration, in seconds; None when nothing was measured."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


@dataclass
class Stats:
    runs: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    queue_wait: Durations = field(default_factory=Durations)
    run_time: Durations = field(default_factory=Durations)
    # Runs that reached a decision or failed trying (done + error): the denominator of the
    # failure rate. Ignored and superseded runs never had the chance to fail.
    concluded: int = 0
    failed: int = 0
    superseded: int = 0
    decisions_by_risk: dict[str, dict[str, int]] = field(default_factory=dict)
    exit_reasons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.concluded if self.concluded else None


def stats(
    store: Store,
    repo: str | None = None,
    since: datetime | None = None,
    repos: frozenset[str] | None = None,
) -> Stats:
    """Figures an operator watches: how long runs wait and take, how often the gate itself
    fails, what it decides at each risk, and why runs ended without a verdict. `repos`
    narrows them to what a signed-in person may read."""
    where, params = RunFilter(repo=repo, since=since, repos=repos).where()
    also = " AND " if where else " WHERE "
    wait = "EXTRACT(EPOCH FROM started_at - created_at)"
    took = "EXTRACT(EPOCH FROM finished_at - started_at)"
    with store.connect() as conn:
        totals = conn.execute(
            f"""SELECT
                count(*) AS runs,
                count(*) FILTER (WHERE state IN ('done', 'error')) AS concluded,
                count(*) FILTER (WHERE {_DECISION} = 'error') AS failed,
                count(*) FILTER (WHERE superseded_by IS NOT NULL OR state = 'superseded')
                    AS superseded,
                count(started_at) AS wait_n,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY {wait}) AS wait_p50,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY {wait}) AS wait_p95,
                max({wait}) AS wait_max,
                count({took}) AS took_n,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY {took}) AS took_p50,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY {took}) AS took_p95,
                max({took}) AS took_max
            FROM gatekeeper.runs{where}""",
            params,
        ).fetchone()
        states = conn.execute(
            f"SELECT state, count(*) AS n FROM gatekeeper.runs{where} GROUP BY state", params
        ).fetchall()
        matrix = conn.execute(
            f"SELECT COALESCE(risk, 'none') AS risk, decision, count(*) AS n"
            f" FROM gatekeeper.runs{where}{also}state = 'done' AND decision IS NOT NULL"
            " GROUP BY 1, 2",
            params,
        ).fetchall()
        # The first line is the reason; what follows (log tails) would split the groups.
        reasons = conn.execute(
            "SELECT state, left(split_part(detail, E'\\n', 1), 300) AS reason, count(*) AS n"
            f" FROM gatekeeper.runs{where}{also}state IN ('error', 'ignored')"
            " GROUP BY 1, 2 ORDER BY n DESC, state, reason LIMIT 25",
            params,
        ).fetchall()
    assert totals is not None

    def durations(prefix: str) -> Durations:
        return Durations(
            count=int(totals[f"{prefix}_n"]),
            p50=_float(totals[f"{prefix}_p50"]),
            p95=_float(totals[f"{prefix}_p95"]),
            max=_float(totals[f"{prefix}_max"]),
        )

    by_risk: dict[str, dict[str, int]] = {}
    for row in matrix:
        by_risk.setdefault(row["risk"], {})[row["decision"]] = int(row["n"])
    return Stats(
        runs=int(totals["runs"]),
        by_state={r["state"]: int(r["n"]) for r in states},
        queue_wait=durations("wait"),
        run_time=durations("took"),
        concluded=int(totals["concluded"]),
        failed=int(totals["failed"]),
        superseded=int(totals["superseded"]),
        decisions_by_risk=by_risk,
        exit_reasons=[dict(r) for r in reasons],
    )


@dataclass(frozen=True)
class Purged:
    runs: int
    deliveries: int


def purge(store: Store, older_than: timedelta) -> Purged:
    """Delete finished runs that ended more than `older_than` ago, then the deliveries no
    run refers to any more that arrived before then (ignored ones, and those of the runs
    just deleted). Active runs are never touched, however old: they still owe GitHub a
    status. Deliveries of the last day must stay for the redelivery sweep, hence the floor.
    """
    if older_than < timedelta(days=1):
        raise ValueError("retention shorter than a day would forget deliveries still needed")
    with store.connect() as conn, conn.transaction():
        runs = conn.execute(
            "DELETE FROM gatekeeper.runs WHERE finished_at < now() - %s AND NOT (state = ANY(%s))",
            (older_than, list(ACTIVE)),
        ).rowcount
        deliveries = conn.execute(
            "DELETE FROM gatekeeper.deliveries d WHERE received_at < now() - %s"
            " AND NOT EXISTS (SELECT 1 FROM gatekeeper.runs r WHERE r.delivery_id = d.id)",
            (older_than,),
        ).rowcount
    return Purged(runs=max(runs, 0), deliveries=max(deliveries, 0))


def ping(store: Store, timeout: int = 3) -> str | None:
    """None when the database and the queue's table answer within `timeout` seconds, else
    why not.

    Its own short-lived connection with a connect timeout: a readiness probe must answer
    quickly even when the server is unreachable rather than refusing."""
    try:
        with psycopg.connect(store.database_url, connect_timeout=timeout) as conn:
            conn.execute(f"SET statement_timeout = {int(timeout) * 1000}")
            conn.execute("SELECT 1 FROM procrastinate_jobs LIMIT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"database unreachable: {first}"
    return None


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its timestamps as ISO 8601 text, for JSON on the API and the CLI."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
