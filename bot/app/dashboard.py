"""Run history over HTTP: the JSON API, the server-rendered dashboard, readiness and metrics.

The dashboard and the run API need a viewer (bot.app.login): a person signed in with GitHub sees
the runs of the repositories they can read, the static token sees all. A run another person
may not read answers 404 like one that does not exist, so its id gives nothing away.
`/readyz` and `/metrics` stay open for probes and scrapers: their labels carry no repository
names (events, outcomes, decisions, risks, stages, queue states, GitHub's rate resources).

Everything is rendered on the server from Jinja2 templates (bot/app/templates) with no script
and no front-end build: the pages must load behind any proxy, print, and stay readable in
a terminal browser. Every value from a run (branch names, log tails, the report) is
escaped; the report's Markdown is rendered with raw HTML disabled.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from markdown_it import MarkdownIt

from bot.app import history, metrics
from bot.app.history import (
    DECISIONS,
    MAX_ID,
    MAX_PAGE,
    MAX_PER_PAGE,
    MAX_PR,
    RISKS,
    STATES,
    RunFilter,
    RunState,
)
from bot.app.login import Access, Viewer
from bot.app.pages import templates
from bot.app.service import Service
from bot.judging.timeline import Timeline, critical_path
from bot.judging.verdict import Decision, Stage

# A run id beyond the column's bigint is no run: 400 like any other bad value, not a 500.
RunId = Annotated[int, Path(ge=1, le=MAX_ID)]


# CommonMark plus GitHub's tables, as the report is written for GitHub. html=False turns
# any raw HTML in it (a branch name, a log line) into text.
_markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
# The report's only raw HTML is its own collapsible log sections. With raw HTML off they
# come out as escaped paragraphs; exactly these shapes are turned back into elements.
_DETAILS_OPEN = re.compile(r"<p>&lt;details&gt;&lt;summary&gt;(.*?)&lt;/summary&gt;</p>")
_DETAILS_CLOSE = "<p>&lt;/details&gt;</p>"


def render_report(text: str, shift: int = 2) -> str:
    """The Markdown report as HTML, its headings moved down `shift` levels so they nest
    under the page's own (an accessible outline has one h1)."""
    tokens = _markdown.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + shift, 6)}"
    html = _markdown.renderer.render(tokens, _markdown.options, {})
    if len(_DETAILS_OPEN.findall(html)) == html.count(_DETAILS_CLOSE):
        html = _DETAILS_OPEN.sub(r"<details><summary>\1</summary>", html)
        html = html.replace(_DETAILS_CLOSE, "</details>")
    return html


def router(service: Service, access: Access) -> APIRouter:
    """The dashboard's routes over the service's store. Read-only: the service alone
    changes runs, so a page can never race a worker."""
    store = service.store
    settings = service.settings
    api = APIRouter()
    web = settings.web_url
    # The access checks run before the parameters are validated: the anonymous learn
    # nothing about the API, not even which values it takes. (Defaults, not Annotated
    # aliases: with postponed annotations FastAPI resolves names in the module only.)
    api_viewer = Depends(access.api)
    page_viewer = Depends(access.page)
    report_viewer = Depends(access.report)

    def readable(viewer: Viewer, run_id: int) -> dict[str, Any] | None:
        """The run, if it exists and `viewer` may read its repository."""
        row = history.get_run(store, run_id)
        return row if row is not None and viewer.can_read(row["repository"]) else None

    def base_url(request: Request) -> str:
        # Behind a proxy the request's own URL is the internal one: prefer the configured.
        return (settings.public_url or str(request.base_url)).rstrip("/")

    def links(request: Request, run_id: int) -> dict[str, str]:
        base = base_url(request)
        return {
            "link": f"{base}/runs/{run_id}/page",
            "api": f"{base}/runs/{run_id}",
            "report": f"{base}/runs/{run_id}/report",
        }

    # -- JSON --------------------------------------------------------------------------------

    @api.get("/runs")
    def list_runs(
        request: Request,
        viewer: Viewer = api_viewer,
        page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
        per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 20,
        repo: Annotated[str | None, Query(max_length=200)] = None,
        pr: Annotated[int | None, Query(ge=1, le=MAX_PR)] = None,
        decision: Decision | None = None,
        state: RunState | None = None,
    ) -> dict[str, Any]:
        """Runs, newest first; `decision=error` includes runs that failed before a verdict."""
        filters = RunFilter(
            repo=repo or None, pr=pr, decision=decision, state=state, repos=viewer.repositories
        )
        result = history.list_runs(store, filters, page=page, per_page=per_page)
        query = {k: v for k, v in request.query_params.items() if k != "page"}

        def page_url(number: int) -> str | None:
            if number < 1 or number > result.pages:
                return None
            return f"{base_url(request)}/runs?{urlencode({**query, 'page': number})}"

        return {
            "items": [
                {**history.jsonable(row), **links(request, row["id"])} for row in result.items
            ],
            "page": result.page,
            "per_page": result.per_page,
            "total": result.total,
            "pages": result.pages,
            "next": page_url(result.page + 1),
            "prev": page_url(min(result.page - 1, result.pages)),
        }

    @api.get("/runs/{run_id}", response_model=None)
    def one_run(
        request: Request, run_id: RunId, viewer: Viewer = api_viewer
    ) -> dict[str, Any] | JSONResponse:
        """The run's row and its verdict JSON; the report itself is at `report`."""
        row = readable(viewer, run_id)
        if row is None:
            return JSONResponse({"detail": f"no run {run_id}"}, status_code=404)
        row.pop("report", None)
        return {**history.jsonable(row), **links(request, run_id)}

    @api.get("/runs/{run_id}/report", response_class=PlainTextResponse)
    def report(run_id: RunId, viewer: Viewer = report_viewer) -> PlainTextResponse:
        """The Markdown report, which statuses and PR comments link to."""
        row = readable(viewer, run_id)
        if row is None:
            return PlainTextResponse("no such run\n", status_code=404)
        text = row["report"] or f"run {run_id} is {row['state']}: no report yet\n"
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")

    @api.get("/stats.json")
    def stats_json(
        viewer: Viewer = api_viewer,
        repo: Annotated[str | None, Query(max_length=200)] = None,
        days: Annotated[int | None, Query(ge=1, le=3650)] = None,
    ) -> dict[str, Any]:
        figures = history.stats(
            store, repo=repo or None, since=_since(days), repos=viewer.repositories
        )
        return {
            "runs": figures.runs,
            "by_state": figures.by_state,
            "queue_wait_seconds": vars(figures.queue_wait),
            "run_seconds": vars(figures.run_time),
            "failure_rate": figures.failure_rate,
            "failed": figures.failed,
            "concluded": figures.concluded,
            "superseded": figures.superseded,
            "decisions_by_risk": figures.decisions_by_risk,
            "exit_reasons": figures.exit_reasons,
        }

    # -- operations --------------------------------------------------------------------------

    @api.get("/readyz")
    def readyz() -> JSONResponse:
        """Ready when the database and the queue answer; load balancers stop sending work
        otherwise."""
        problem = history.ping(store)
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    @api.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(store), media_type=metrics.CONTENT_TYPE)

    # -- pages -------------------------------------------------------------------------------

    @api.get("/", response_class=HTMLResponse)
    def index(request: Request, viewer: Viewer = page_viewer) -> HTMLResponse:
        params = request.query_params
        errors: list[str] = []
        pr = _int(params.get("pr"), "pull request", 1, MAX_PR, errors)
        page = _int(params.get("page"), "page", 1, MAX_PAGE, errors) or 1
        per_page = _int(params.get("per_page"), "per page", 1, MAX_PER_PAGE, errors) or 25
        decision = _choice(params.get("decision"), "decision", DECISIONS, errors)
        state = _choice(params.get("state"), "state", STATES, errors)
        repo = (params.get("repo") or "").strip()[:200] or None
        filters = RunFilter(
            repo=repo, pr=pr, decision=decision, state=state, repos=viewer.repositories
        )
        result = history.list_runs(store, filters, page=page, per_page=per_page)
        chosen = {"repo": repo, "pr": pr, "decision": decision, "state": state}
        kept = {k: v for k, v in {**chosen, "per_page": per_page}.items() if v}
        if per_page == 25:
            kept.pop("per_page")

        def page_link(number: int) -> str | None:
            if not 1 <= number <= result.pages:
                return None
            return "/?" + urlencode({**kept, "page": number})

        return _page(
            "index.html",
            viewer,
            nav="runs",
            result=result,
            filters=chosen,
            filtered=any(chosen.values()),
            errors=errors,
            decisions=DECISIONS,
            states=STATES,
            newer=page_link(min(page - 1, result.pages)),
            older=page_link(page + 1),
        )

    @api.get("/runs/{run_id}/page", response_class=HTMLResponse)
    def run_page(run_id: RunId, viewer: Viewer = page_viewer) -> HTMLResponse:
        row = readable(viewer, run_id)
        if row is None:
            return _page("missing.html", viewer, status=404, nav="runs", run_id=run_id)
        verdict = row["verdict"] or {}
        evidence = verdict.get("evidence") or {}
        target = row["target"] or {}
        pr_number = row["pr_number"]
        timeline, bars = _timeline(verdict.get("stages") or [])
        return _page(
            "run.html",
            viewer,
            nav="runs",
            run=row,
            verdict=verdict,
            schema=evidence.get("schema") or {},
            timeline=timeline,
            bars=bars,
            report_html=render_report(row["report"]) if row["report"] else None,
            head_ref=target.get("head_ref"),
            base_ref=target.get("base_ref"),
            pr_url=f"{web}/{row['repository']}/pull/{pr_number}" if pr_number else None,
            commit_url=(
                f"{web}/{row['repository']}/commit/{row['head_sha']}" if row["head_sha"] else None
            ),
        )

    @api.get("/stats", response_class=HTMLResponse)
    def stats_page(request: Request, viewer: Viewer = page_viewer) -> HTMLResponse:
        params = request.query_params
        errors: list[str] = []
        days = _int(params.get("days"), "days", 1, 3650, errors)
        repo = (params.get("repo") or "").strip()[:200] or None
        figures = history.stats(store, repo=repo, since=_since(days), repos=viewer.repositories)
        return _page(
            "stats.html",
            viewer,
            nav="stats",
            s=figures,
            repo=repo,
            days=days,
            errors=errors,
            risks=[*RISKS, "none"],
            decisions=DECISIONS,
            states=STATES,
        )

    return api


def _page(template: str, viewer: Viewer, status: int = 200, **context: Any) -> HTMLResponse:
    """The page; 400 when it reports `errors` in what the form asked for."""
    context.update(user=viewer.login, readable=viewer.repositories)
    html = templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=400 if context.get("errors") else status)


def _timeline(stages: list[dict[str, Any]]) -> tuple[Timeline, list[dict[str, Any]]]:
    """The stages on the run's clock (bot/judging/timeline.py) and a bar for each: it starts
    when its stage began and is as wide as its share of the run, so stages that ran side by
    side overlap and the slow one is the long bar."""
    timeline = critical_path([Stage.model_validate(stage) for stage in stages])
    span = timeline.seconds
    rows = []
    for slot in timeline.slots:
        # A stage of a millisecond still gets a visible sliver, inside the track.
        width = max(100 * slot.seconds / span, 0.4) if span else 0.4
        offset = min(100 * slot.start / span, 100 - width) if span else 0.0
        rows.append({"slot": slot, "offset": offset, "width": width})
    return timeline, rows


def _since(days: int | None) -> datetime | None:
    return datetime.now(UTC) - timedelta(days=days) if days else None


def _int(value: str | None, label: str, low: int, high: int, errors: list[str]) -> int | None:
    """A form field as a number: empty means "any"; a bad one is reported on the page."""
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        errors.append(f"{label} must be a whole number, not {value[:40]!r}")
        return None
    if not low <= number <= high:
        errors.append(f"{label} must be between {low} and {high}")
        return None
    return number


def _choice(
    value: str | None, label: str, choices: tuple[str, ...], errors: list[str]
) -> str | None:
    if not value:
        return None
    if value not in choices:
        errors.append(f"{label} must be one of {', '.join(choices)}")
        return None
    return value


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


templates.filters["when"] = _when
templates.filters["seconds"] = _seconds
templates.filters["percent"] = _percent
templates.filters["short"] = lambda sha: (sha or "")[:12]
templates.filters["iso"] = lambda value: value.isoformat() if value else ""
