"""The run history over real HTTP: the JSON API, the dashboard's pages, /readyz, /metrics,
and one real browser (Debian's Chromium driven by Playwright) signing in with GitHub and
clicking through the pages.

The app is the service's own (`create_app`), served by uvicorn on loopback, over a real
PostgreSQL store. Its GitHub client points at a closed port and is never called: nothing
here processes a run, the runs are written to the store as the service writes them. One of
them carries a verdict the real pipeline produced on a tiny repository. The history needs a
viewer: these tests read it with the static token (GATEKEEPER_DASHBOARD_TOKEN), and the
browser signs in through the fake GitHub's OAuth (tests/app/test_login.py tests the
sign-in itself).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from bot.app import metrics
from bot.app.dashboard import render_report
from bot.app.service import Service
from bot.app.settings import Settings
from bot.app.store import Store
from bot.engine.job import Job
from bot.engine.pipeline import validate
from bot.github.auth import TokenCredentials
from bot.github.client import GitHubClient
from bot.gitrepo import resolve
from bot.judging.verdict import Verdict
from bot.policy.loader import policy_at
from bot.reporting import render_markdown
from bot.sandbox.local import for_policy
from tests.app.test_service import Running as ServiceServer
from tests.github.fake import FakeGitHub
from tests.github.openapi import github_spec
from tests.helpers import ITEMS_CHECK as CHECK
from tests.helpers import ITEMS_POLICY as POLICY
from tests.helpers import git

SECRET = "dashboard-secret"
TOKEN = "dashboard-api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def real_verdict(tmp_path_factory: pytest.TempPathFactory) -> Verdict:
    """What the pipeline says about a builder branch adding a column (about 2 s)."""
    repo = tmp_path_factory.mktemp("dashboard") / "inventory"
    for name, text in {
        ".github/gatekeeper.yml": POLICY,
        "checks/schema.yml": CHECK,
        "migrations/001_items.sql": "CREATE TABLE items (id bigint PRIMARY KEY, name text);\n",
    }.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "builder/add-note")
    (repo / "migrations" / "002_note.sql").write_text(
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "fix: add items.note")
    base_sha, head_sha = resolve(repo, "main"), resolve(repo, "builder/add-note")
    with policy_at(repo, base_sha) as loaded:
        job = Job(
            repository="octo/inventory",
            base_ref="main",
            head_ref="builder/add-note",
            base_sha=base_sha,
            head_sha=head_sha,
            pr_number=12,
            trigger="pull_request",
            policy_source=loaded.source,
        )
        verdict = validate(job, repo, loaded, for_policy)
    assert verdict.decision.value == "approve", verdict.summary
    return verdict


def add_run(
    store: Store,
    *,
    repo: str = "octo/inventory",
    pr: int | None = 12,
    state: str = "done",
    verdict: Verdict | None = None,
    detail: str = "",
    head_ref: str = "builder/add-note",
    report: str | None = None,
) -> int:
    sha = uuid.uuid4().hex + "0" * 8
    target = {
        "repository": repo,
        "pr_number": pr,
        "installation_id": 1,
        "head_sha": sha,
        "head_ref": head_ref,
        "base_ref": "main",
    }
    run_id = store.accept(str(uuid.uuid4()), "pull_request", "synchronize", target, sha)
    assert run_id is not None
    now = datetime.now(UTC)
    fields: dict[str, Any] = {"state": state, "detail": detail}
    if state != "queued":
        fields["started_at"] = now + timedelta(seconds=0.4)
        fields["finished_at"] = now + timedelta(seconds=0.4 + (verdict.seconds if verdict else 1))
    if verdict is not None:
        fields.update(
            decision=verdict.decision.value,
            risk=verdict.risk.value if verdict.risk else None,
            verdict=verdict.model_dump(mode="json"),
            report=report if report is not None else render_markdown(verdict),
        )
    store.update(run_id, **fields)
    return run_id


class Running(ServiceServer):
    """The service's app on a loopback port, with a GitHub client that is never called;
    `get` reads it with the static token."""

    def __init__(self, store: Store, **settings: Any):
        config = Settings(
            webhook_secret=SECRET,
            database_url=store.database_url,
            **{"dashboard_token": TOKEN, **settings},
        )
        # Port 9 (discard) is closed: a call to GitHub would fail loudly, and none is made.
        github = GitHubClient("http://127.0.0.1:9", TokenCredentials("unused"))
        super().__init__(Service(config, store, github), worker=False)

    def get(self, path: str, **params: Any) -> httpx.Response:
        # httpx drops a URL's own query string when given params, even empty ones.
        return httpx.get(f"{self.url}{path}", params=params or None, headers=AUTH, timeout=10)


@pytest.fixture
def running(store: Store) -> Iterator[Running]:
    with Running(store) as server:
        yield server


# -- JSON ----------------------------------------------------------------------------------


def test_runs_api_lists_newest_first_with_links_and_pages(store, running, real_verdict):
    ids = [add_run(store, pr=n, verdict=real_verdict) for n in (1, 2, 3)]
    first = running.get("/runs", per_page=2)
    assert first.status_code == 200
    body = first.json()
    assert [item["id"] for item in body["items"]] == [ids[2], ids[1]]
    assert (body["total"], body["pages"], body["page"], body["per_page"]) == (3, 2, 1, 2)
    item = body["items"][0]
    assert {
        "id",
        "repository",
        "pr_number",
        "head_sha",
        "state",
        "decision",
        "risk",
        "created_at",
        "started_at",
        "finished_at",
        "seconds",
        "link",
    } <= item.keys()
    assert item["decision"] == "approve" and item["risk"] == "low"
    assert item["seconds"] == pytest.approx(real_verdict.seconds, abs=0.01)
    assert item["link"] == f"{running.url}/runs/{ids[2]}/page"
    assert body["prev"] is None
    second = httpx.get(body["next"], headers=AUTH, timeout=10).json()
    assert [i["id"] for i in second["items"]] == [ids[0]]
    assert second["next"] is None and "per_page=2" in second["prev"]
    past = running.get("/runs", page=9, per_page=2).json()
    assert past["items"] == [] and past["total"] == 3 and "page=2" in past["prev"]
    # Each link answers.
    assert httpx.get(item["link"], headers=AUTH, timeout=10).status_code == 200
    assert "APPROVE" in httpx.get(item["report"], headers=AUTH, timeout=10).text


def test_runs_api_filters(store, running, real_verdict):
    mine = add_run(store, pr=5, verdict=real_verdict)
    other = add_run(store, repo="octo/billing", pr=5, verdict=real_verdict)
    failed = add_run(store, pr=6, state="error", detail="git clone failed")

    def ids(**params: Any) -> list[int]:
        response = running.get("/runs", **params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids(repo="octo/inventory") == [failed, mine]
    assert ids(pr=5) == [other, mine]
    assert ids(repo="octo/billing", pr=5, decision="approve") == [other]
    assert ids(decision="error") == [failed]
    assert ids(state="error") == [failed]
    assert ids(decision="reject") == []


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"per_page": 0},
        {"per_page": 101},
        {"pr": "abc"},
        {"pr": 0},
        {"decision": "maybe"},
        {"state": "lost"},
        {"page": "two"},
        # Past what the columns hold: refused like any bad value (these were 500s).
        {"page": 10**30},
        {"page": 10**6 + 1},
        {"pr": 2**31},
    ],
)
def test_runs_api_rejects_bad_parameters(running, params):
    response = running.get("/runs", **params)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_run_api_one_run_and_unknown_ones(store, running, real_verdict):
    run_id = add_run(store, verdict=real_verdict)
    body = running.get(f"/runs/{run_id}").json()
    assert body["id"] == run_id and body["state"] == "done"
    assert body["verdict"]["decision"] == "approve"
    assert body["verdict"]["evidence"]["schema"]["diff"] == real_verdict.evidence["schema"]["diff"]
    assert body["target"]["head_ref"] == "builder/add-note"
    assert body["report"].endswith(f"/runs/{run_id}/report")
    missing = running.get("/runs/999999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no run 999999"}
    assert running.get("/runs/nine").status_code == 400
    assert running.get(f"/runs/{2**63}").status_code == 400  # beyond bigint: no such id
    assert running.get(f"/runs/{2**64}/page").status_code == 400
    assert running.get(f"/runs/{2**64}/report").status_code == 400
    assert running.get("/runs/999999/report").status_code == 404  # the existing endpoint


# -- pages ---------------------------------------------------------------------------------


def test_index_lists_runs_with_badges_and_filters(store, running, real_verdict):
    approved = add_run(store, verdict=real_verdict)
    failed = add_run(store, pr=13, state="error", detail="git clone failed: 502")
    page = running.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<html lang="en">' in html and "<h1>Runs</h1>" in html
    assert f'href="/runs/{approved}/page"' in html and f'href="/runs/{failed}/page"' in html
    assert '<span class="badge d-approve">approve</span>' in html
    assert '<span class="badge r-low">low</span>' in html
    assert '<span class="badge d-error">error</span>' in html
    assert '<th scope="col">Decision</th>' in html
    filtered = running.get("/", decision="error", pr="", repo="", state="").text
    assert f'href="/runs/{failed}/page"' in filtered
    assert f'href="/runs/{approved}/page"' not in filtered
    assert '<option value="error" selected>' in filtered


def test_index_pages_and_reports_bad_filters(store, running):
    for n in range(3):
        add_run(store, pr=n + 1, state="error", detail=f"failure {n}")
    first = running.get("/", per_page=2).text
    assert 'rel="next"' in first and 'rel="prev"' not in first
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older is not None
    second = running.get(older.group(1).replace("&amp;", "&")).text
    assert "failure 0" in second and "failure 2" not in second and 'rel="prev"' in second
    bad = running.get("/", pr="abc", decision="maybe")
    assert bad.status_code == 400
    assert "pull request must be a whole number" in bad.text
    assert "decision must be one of" in bad.text
    assert "failure 2" in bad.text  # the rest of the page still works


def test_run_page_shows_report_criteria_schema_diff_and_timeline(store, running, real_verdict):
    run_id = add_run(store, verdict=real_verdict)
    page = running.get(f"/runs/{run_id}/page")
    assert page.status_code == 200
    html = page.text
    assert f"<h1>Run #{run_id}: octo/inventory #12</h1>" in html
    # The criteria table, one row per criterion.
    assert '<h2 id="criteria">Criteria</h2>' in html
    for criterion in real_verdict.criteria:
        assert f"<code>{criterion.id}</code>" in html
    # The schema diff, line by line.
    assert '<span class="add">+ column public.items.note text NULL</span>' in html
    # The timeline: one bar per stage on the run's clock, inside the track, each build
    # inside `build`, and the critical path named.
    bars = [
        (float(offset), float(width))
        for offset, width in re.findall(r'style="margin-left: ([0-9.]+)%; width: ([0-9.]+)%"', html)
    ]
    assert len(bars) == len(real_verdict.stages)
    assert all(offset + width <= 100.01 for offset, width in bars)
    assert "<strong>Critical path</strong>, the stages the run waited on: merge → sandbox" in html
    assert "↳ build base" in html and "↳ build merge" in html
    # The report rendered as HTML, its headings nested under the page's.
    assert '<div class="report">' in html
    assert "<h3>✅ Gatekeeper: APPROVE · risk 🟢 LOW</h3>" in html
    assert "<h4>Criteria</h4>" in html and "<table>" in html
    assert "<details><summary>API log (tail)</summary>" in html
    assert html.count("<h1>") == 1


def test_pages_escape_what_a_change_controls(store, running, real_verdict):
    evil = "<script>alert(1)</script>"
    report = f"# Report\n\n{evil}\n\n<img src=x onerror=alert(2)>\n\n[x](javascript:alert(3))\n"
    run_id = add_run(
        store, verdict=real_verdict, head_ref=f"builder/{evil}", detail=evil, report=report
    )
    for path in ("/", f"/runs/{run_id}/page", "/stats"):
        html = running.get(path).text
        assert "<script>" not in html and "<img" not in html
        assert 'href="javascript:' not in html
    page = running.get(f"/runs/{run_id}/page").text
    assert "builder/&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page


def test_run_page_without_a_verdict_and_unknown_runs(store, running):
    run_id = add_run(store, state="error", detail="git clone failed: 502 Bad Gateway")
    html = running.get(f"/runs/{run_id}/page").text
    assert "git clone failed: 502 Bad Gateway" in html
    assert "No report: this run is error" in html
    queued = add_run(store, state="queued")
    assert "This run is queued." in running.get(f"/runs/{queued}/page").text
    missing = running.get("/runs/999999/page")
    assert missing.status_code == 404 and "Run 999999 not found" in missing.text


def test_statistics_page_and_json(store, running, real_verdict):
    add_run(store, verdict=real_verdict)
    add_run(store, pr=13, state="error", detail="git clone failed: 502")
    add_run(store, pr=14, state="ignored", detail="feature/x is not a builder branch")
    page = running.get("/stats")
    assert page.status_code == 200
    html = page.text
    for heading in ("Durations", "Outcomes", "Decisions by risk", "Exit reasons"):
        assert f">{heading}</h2>" in html
    assert '<th scope="row">Queue wait</th>' in html and '<th scope="row">Run time</th>' in html
    assert "50.0 %" in html  # one error out of two concluded runs
    assert "git clone failed: 502" in html and "feature/x is not a builder branch" in html
    figures = running.get("/stats.json").json()
    assert figures["runs"] == 3 and figures["failure_rate"] == pytest.approx(0.5)
    assert figures["decisions_by_risk"] == {"low": {"approve": 1}}
    assert figures["run_seconds"]["count"] == 3
    assert running.get("/stats.json", repo="octo/billing").json()["runs"] == 0
    assert running.get("/stats", days="x").status_code == 400
    assert running.get("/stats.json", days=0).status_code == 400


# -- operations ----------------------------------------------------------------------------


def test_readyz_answers_from_the_database(running):
    ready = running.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_readyz_is_not_ready_without_the_queue(fresh_database):
    bare = Store(fresh_database)  # the server answers, but the service's schema is not there
    try:
        with Running(bare) as server:
            ready = server.get("/readyz")
    finally:
        bare.close()
    assert ready.status_code == 503
    assert "procrastinate_jobs" in ready.json()["reason"]


def test_readyz_and_metrics_when_the_database_is_down():
    down = Store("postgresql://gatekeeper@127.0.0.1:9/gatekeeper?connect_timeout=2")
    try:
        with Running(down) as server:
            ready = server.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            assert ready.json()["reason"].startswith("database unreachable:")
            scraped = server.get("/metrics")
            assert scraped.status_code == 200 and "gatekeeper_store_up 0.0" in scraped.text
            assert server.get("/healthz").status_code == 200  # the process itself is up
    finally:
        down.close()  # its pool would go on trying to connect until the interpreter exits


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics(store, running, real_verdict):
    add_run(store, state="queued", pr=2)
    add_run(store, state="queued", pr=3)
    add_run(store, state="running")
    before = _sample("gatekeeper_deliveries_total", event="star", outcome="ignored")
    duplicates = _sample("gatekeeper_deliveries_total", event="star", outcome="duplicate")
    body = json.dumps({"action": "created"}).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "star",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    for _ in range(2):  # the second is a redelivery
        answer = httpx.post(f"{running.url}/webhook", content=body, headers=headers, timeout=10)
        assert answer.status_code == 200
    decisions = _sample("gatekeeper_decisions_total", decision="approve", risk="low")
    merges = _sample("gatekeeper_run_stage_seconds_count", stage="merge")
    metrics.verdict(real_verdict)  # what the service calls when a run finishes

    scraped = running.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'gatekeeper_queue_depth{state="queued"} 2.0' in text
    assert 'gatekeeper_queue_depth{state="running"} 1.0' in text
    assert 'gatekeeper_queue_depth{state="dispatched"} 0.0' in text
    assert "gatekeeper_store_up 1.0" in text
    assert re.search(r"^gatekeeper_oldest_queued_seconds [0-9.e+-]+$", text, re.M)
    assert 'gatekeeper_deliveries_total{event="star",outcome="ignored"}' in text
    assert _sample("gatekeeper_deliveries_total", event="star", outcome="ignored") == before + 1
    assert (
        _sample("gatekeeper_deliveries_total", event="star", outcome="duplicate") == duplicates + 1
    )
    assert _sample("gatekeeper_decisions_total", decision="approve", risk="low") == decisions + 1
    assert _sample("gatekeeper_run_stage_seconds_count", stage="merge") == merges + 1
    assert "gatekeeper_run_seconds_bucket" in text


# -- the report as HTML ----------------------------------------------------------------------


def test_render_report_escapes_html_and_keeps_its_own_details():
    html = render_report(
        "# Title\n\n## Part\n\n<b>bold?</b>\n\n<details><summary>Log <tail></summary>\n\n"
        "```\nx < y\n```\n\n</details>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "[bad](javascript:alert(1)) [good](https://example.com/r)\n"
    )
    assert "<h3>Title</h3>" in html and "<h4>Part</h4>" in html
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert "<details><summary>Log &lt;tail&gt;</summary>" in html and "</details>" in html
    assert "<pre><code>x &lt; y\n</code></pre>" in html
    assert "<table>" in html and "<th>a</th>" in html
    assert 'href="javascript:' not in html and 'href="https://example.com/r"' in html
    # An unbalanced opening is left as text rather than swallowing the rest of the page.
    assert "<details>" not in render_report("<details><summary>x</summary>\n")


# -- a real browser ------------------------------------------------------------------------


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    """The fake GitHub (tests/github/fake.py) where alice, signed in, may read octo/inventory
    and not octo/billing; at the end, every request it got must be one GitHub accepts."""
    served = tmp_path / "served"
    served.mkdir()
    git(served, "init", "-q", "-b", "main")
    git(served, "commit", "-q", "--allow-empty", "-m", "base")
    with FakeGitHub(spec=github_spec()) as fake:
        fake.add_repo("octo/inventory", served)
        fake.add_repo("octo/billing", served)
        fake.set_permission("octo/inventory", "alice", "write")
        fake.sign_in_as("alice")
        yield fake
        fake.assert_no_violations()


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium; "
    ".ci/run installs it when run as root)",
)
def test_dashboard_in_a_real_browser(store, github, real_verdict):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    add_run(store, pr=11, state="error", detail="git clone failed: 502 Bad Gateway")
    add_run(store, pr=10, state="ignored", detail="feature/x is not a builder branch")
    run_id = add_run(store, verdict=real_verdict)
    add_run(store, pr=13, state="queued")
    hidden = add_run(store, repo="octo/billing", pr=5, state="error", detail="billing: no access")
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    oauth = {
        "github_api_url": github.url,
        "oauth_client_id": github.oauth_client_id,
        "oauth_client_secret": github.oauth_client_secret,
        "session_secret": "browser-test-session-secret",
    }

    with Running(store, **oauth) as app, sync_api.sync_playwright() as playwright:
        github.set_oauth_callback(f"{app.url}/login/callback")
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            # Someone who is not signed in sees the sign-in page, whatever they open.
            anonymous = browser.new_context().new_page()
            anonymous.goto(f"{app.url}/runs/{run_id}/page")
            assert anonymous.url == f"{app.url}/login?next=%2Fruns%2F{run_id}%2Fpage"
            assert anonymous.title() == "Sign in · Gatekeeper"
            assert anonymous.get_by_role("link", name="Sign in with GitHub").is_visible()
            assert "octo/inventory" not in anonymous.content()
            anonymous.screenshot(path=str(ARTIFACTS / "dashboard-login.png"), full_page=True)

            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on(
                "response",
                lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
            )

            # Signing in: to the fake GitHub's authorization and back, where it started.
            page.goto(f"{app.url}/")
            page.get_by_role("link", name="Sign in with GitHub").click()
            page.wait_for_url(f"{app.url}/")
            assert page.title() == "Runs · Gatekeeper"
            assert "Signed in as alice" in page.locator("header").inner_text()
            # alice cannot read octo/billing: its run is not listed, nor its detail shown.
            assert page.locator(f'a[href="/runs/{hidden}/page"]').count() == 0
            assert "octo/billing" not in page.content()
            assert "billing: no access" not in page.content()
            assert page.locator("tbody tr").count() == 4
            assert page.request.get(f"{app.url}/runs/{hidden}").status == 404
            row = page.locator("tbody tr", has=page.locator(f'a[href="/runs/{run_id}/page"]'))
            assert row.locator(".badge.d-approve").inner_text() == "approve"
            assert row.locator(".badge.r-low").inner_text() == "low"
            page.screenshot(path=str(ARTIFACTS / "dashboard-index.png"), full_page=True)

            page.get_by_role("link", name=f"#{run_id}", exact=True).click()
            page.wait_for_url(f"**/runs/{run_id}/page")
            assert page.get_by_role("heading", level=1).inner_text().startswith(f"Run #{run_id}")
            criteria = page.locator("#criteria + table")
            assert criteria.locator("tbody tr").count() == len(real_verdict.criteria)
            assert "migrate.idempotent" in criteria.inner_text()
            assert page.locator("ol.timeline li").count() == len(real_verdict.stages)
            assert "+ column public.items.note text NULL" in page.locator("pre.diff").inner_text()
            report = page.locator("div.report")
            assert "Gatekeeper: APPROVE" in report.locator("h3").first.inner_text()
            assert report.locator("table").count() >= 3
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            page.get_by_role("link", name="Statistics").click()
            page.wait_for_url("**/stats")
            assert page.get_by_role("heading", name="Decisions by risk").is_visible()
            assert "billing: no access" not in page.content()
            page.screenshot(path=str(ARTIFACTS / "dashboard-stats.png"), full_page=True)

            page.get_by_role("link", name="Runs", exact=True).click()
            page.get_by_label("Decision").select_option("error")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**/?*decision=error*")
            assert page.locator("tbody tr").count() == 1

            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(f"{app.url}/login")
            page.goto(f"{app.url}/stats")
            assert page.url == f"{app.url}/login?next=%2Fstats"
        finally:
            browser.close()

    assert problems == []
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
