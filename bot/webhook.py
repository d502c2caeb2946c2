"""The webhook endpoint: verify, record, queue, answer. Nothing slow happens here.

GitHub gives a delivery 10 seconds and does not retry on its own, so the answer must come
fast and only after the delivery is safely in the database: a crash after the answer loses
nothing, and a redelivery of the same id is recognised and not run twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from bot import dashboard, events, logs, metrics
from bot.service import Service

log = logging.getLogger("gatekeeper.webhook")


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="gatekeeper", docs_url=None, redoc_url=None)
    secret = service.settings.webhook_secret.get_secret_value().encode()
    limit = service.settings.max_body_bytes

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/runs/{run_id}/report", response_class=PlainTextResponse)
    def report(run_id: int) -> PlainTextResponse:
        try:
            run = service.store.run(run_id)
        except KeyError:
            return PlainTextResponse("no such run\n", status_code=404)
        text = run["report"] or f"run {run_id} is {run['state']}: no report yet\n"
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _answer(413, f"body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _answer(413, f"body larger than {limit} bytes")
        if not _signed(secret, bytes(body), request.headers.get("x-hub-signature-256")):
            return _answer(401, "missing or invalid X-Hub-Signature-256")
        event = request.headers.get("x-github-event")
        delivery = request.headers.get("x-github-delivery")
        if not event or not delivery:
            return _answer(400, "X-GitHub-Event and X-GitHub-Delivery are required")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _answer(400, f"body is not JSON: {exc}")
        if not isinstance(payload, dict):
            return _answer(400, "body is not a JSON object")
        if event == "ping":
            return _answer(200, "pong")
        return await run_in_threadpool(_accept, service, event, delivery, payload)

    app.include_router(dashboard.router(service))
    return app


def _accept(service: Service, event: str, delivery: str, payload: dict[str, Any]) -> JSONResponse:
    with logs.bind(delivery_id=delivery):
        try:
            return _record(service, event, delivery, payload)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            # Nothing was committed: GitHub marks the delivery failed, and the redelivery
            # sweep asks for it again once the database is back.
            log.warning("delivery refused, the database is unavailable: %s", exc)
            metrics.delivery(event, "unavailable")
            return _answer(503, "the service's database is unavailable; redeliver later")


def _record(service: Service, event: str, delivery: str, payload: dict[str, Any]) -> JSONResponse:
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    try:
        routed = events.route(event, payload, delivery)
    except events.PayloadError as exc:
        metrics.delivery(event, "malformed")
        return _answer(400, f"malformed {event} payload: {exc}")
    if isinstance(routed, events.Target) and routed.needs_pr_lookup:
        routed = events.Ignored(
            reason="a push to a pull request's branch is validated through its "
            "pull_request.synchronize delivery"
        )
    if isinstance(routed, events.Ignored):
        fresh = service.store.record_delivery(delivery, event, action, "ignored", routed.reason)
        metrics.delivery(event, "ignored" if fresh else "duplicate")
        return _answer(200, f"ignored: {routed.reason}" if fresh else "duplicate delivery")
    if isinstance(routed, events.NeedsPullRequest):
        target = {
            "kind": "needs-pull-request",
            "request": routed.model_dump(mode="json"),
            "repository": routed.repository,
            "pr_number": routed.pr_number,
            "installation_id": routed.installation_id,
        }
        head_sha = ""
    else:
        target = routed.model_dump(mode="json")
        head_sha = routed.head_sha
    lanes = service.settings.repo_concurrency
    run_id = service.store.accept(delivery, event, action, target, head_sha, lanes)
    if run_id is None:
        metrics.delivery(event, "duplicate")
        return _answer(200, "duplicate delivery")
    metrics.delivery(event, "accepted")
    log.info("accepted %s.%s as run %s", event, action or "-", run_id)
    return JSONResponse({"message": "accepted", "run": run_id}, status_code=202)


def _signed(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)
