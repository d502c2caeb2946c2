"""Prometheus metrics: what an operator alerts on without reading the dashboard.

Counters and histograms live in prometheus-client's process-wide registry and are bumped
where things happen (a delivery answered, a verdict published). The queue depth is not
counted up and down in memory: it is read from the store at scrape time, so it stays true
across restarts and with several processes sharing one database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.app.history import ping
from bot.app.store import ACTIVE, Store
from bot.judging.verdict import Verdict

log = logging.getLogger("gatekeeper.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Stages last from milliseconds (merge) to minutes (a build, a large table rewrite).
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

DELIVERIES = Counter(
    "gatekeeper_deliveries",
    "Webhook deliveries answered, by GitHub event and what the service did with them.",
    ["event", "outcome"],
)
DECISIONS = Counter(
    "gatekeeper_decisions",
    "Verdicts published on pull requests, by decision and risk.",
    ["decision", "risk"],
)
STAGE_SECONDS = Histogram(
    "gatekeeper_run_stage_seconds",
    "Time each validation stage took (merge, sandbox, migrate, checks, ...).",
    ["stage"],
    buckets=_BUCKETS,
)
RUN_SECONDS = Histogram("gatekeeper_run_seconds", "Time a whole validation took.", buckets=_BUCKETS)
GITHUB_CALLS = Counter(
    "gatekeeper_github_api_calls",
    "HTTP requests sent to GitHub's API, each retry included, by method and the answer's "
    "status ('error': no answer).",
    ["method", "status"],
)
GITHUB_RATE_REMAINING = Gauge(
    "gatekeeper_github_rate_limit_remaining",
    "Requests left in GitHub's rate-limit window, from its latest answer, by resource.",
    ["resource"],
)


# GitHub's webhook event names ("Webhook events and payloads" in GitHub's documentation).
# Every signed name would otherwise become a label value of its own: a sender holding the
# secret, or a proxy rewriting headers, could grow the registry without bound.
GITHUB_EVENTS = frozenset(
    {
        "branch_protection_configuration",
        "branch_protection_rule",
        "check_run",
        "check_suite",
        "code_scanning_alert",
        "commit_comment",
        "create",
        "custom_property",
        "custom_property_values",
        "delete",
        "dependabot_alert",
        "deploy_key",
        "deployment",
        "deployment_protection_rule",
        "deployment_review",
        "deployment_status",
        "discussion",
        "discussion_comment",
        "fork",
        "github_app_authorization",
        "gollum",
        "installation",
        "installation_repositories",
        "installation_target",
        "issue_comment",
        "issue_dependencies",
        "issues",
        "label",
        "marketplace_purchase",
        "member",
        "membership",
        "merge_group",
        "meta",
        "milestone",
        "org_block",
        "organization",
        "package",
        "page_build",
        "personal_access_token_request",
        "ping",
        "project",
        "project_card",
        "project_column",
        "projects_v2",
        "projects_v2_item",
        "projects_v2_status_update",
        "public",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "pull_request_review_thread",
        "push",
        "registry_package",
        "release",
        "repository",
        "repository_advisory",
        "repository_dispatch",
        "repository_import",
        "repository_ruleset",
        "repository_vulnerability_alert",
        "secret_scanning_alert",
        "secret_scanning_alert_location",
        "secret_scanning_scan",
        "security_advisory",
        "security_and_analysis",
        "sponsorship",
        "star",
        "status",
        "sub_issues",
        "team",
        "team_add",
        "watch",
        "workflow_dispatch",
        "workflow_job",
        "workflow_run",
    }
)
OTHER_EVENT = "other"


def event_label(event: str) -> str:
    """`event` if GitHub sends such events, else "other"."""
    return event if event in GITHUB_EVENTS else OTHER_EVENT


def delivery(event: str, outcome: str) -> None:
    """Count one answered delivery; events outside GitHub's list count under "other"."""
    DELIVERIES.labels(event=event_label(event), outcome=outcome).inc()


def verdict(result: Verdict) -> None:
    """Count a published verdict and its stage timings."""
    risk = result.risk.value if result.risk else "none"
    DECISIONS.labels(decision=result.decision.value, risk=risk).inc()
    for stage in result.stages:
        STAGE_SECONDS.labels(stage=stage.name).observe(max(stage.seconds, 0.0))
    RUN_SECONDS.observe(max(result.seconds, 0.0))


def github_call(method: str, status: int | None) -> None:
    """Count one request sent to GitHub; `status` None when it got no answer."""
    label = "error" if status is None else str(status)
    GITHUB_CALLS.labels(method=method.upper(), status=label).inc()


def github_rate_limit(headers: Mapping[str, str]) -> None:
    """Follow `X-RateLimit-Remaining` from an answer's headers (any case); an answer without
    it (some errors, a proxy's) leaves the gauge as it was."""
    lowered = {key.lower(): value for key, value in headers.items()}
    remaining = lowered.get("x-ratelimit-remaining", "")
    if remaining.isdigit():
        resource = lowered.get("x-ratelimit-resource") or "core"
        GITHUB_RATE_REMAINING.labels(resource=resource).set(int(remaining))


class StoreCollector(Collector):
    """Queue depth by state and the age of the oldest queued run, read at scrape time."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "gatekeeper_store_up", "1 when the service's database answered the scrape."
        )
        depth = GaugeMetricFamily(
            "gatekeeper_queue_depth",
            "Runs not finished yet, by state (queued, running, waiting, dispatched).",
            labels=["state"],
        )
        oldest = GaugeMetricFamily(
            "gatekeeper_oldest_queued_seconds",
            "Age of the oldest run still queued; 0 when none is.",
        )
        # The probe's own short connection first: a pool would wait for its timeout when
        # the server is gone, and a scrape must answer quickly either way.
        problem = ping(self.store)
        if problem is not None:
            log.warning("metrics: %s", problem)
            up.add_metric([], 0)
            yield up
            return
        try:
            with self.store.connect() as conn:
                rows = conn.execute(
                    "SELECT state, count(*) AS n,"
                    " COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age"
                    " FROM gatekeeper.runs WHERE state = ANY(%s) GROUP BY state",
                    (list(ACTIVE),),
                ).fetchall()
        except psycopg.Error as exc:
            log.warning("metrics: the store did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        counts = {r["state"]: r for r in rows}
        for state in ACTIVE:
            depth.add_metric([state], int(counts[state]["n"]) if state in counts else 0)
        oldest.add_metric([], float(counts["queued"]["age"]) if "queued" in counts else 0.0)
        yield from (up, depth, oldest)


def render(store: Store) -> bytes:
    """The Prometheus text exposition: process-wide metrics, then the store's gauges."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(StoreCollector(store))
    return generate_latest(REGISTRY) + generate_latest(scrape)
