"""The webhook endpoint: verify, record, queue, answer. Nothing slow happens here.

GitHub gives a delivery 10 seconds and does not retry on its own, so the answer must come
fast and only after the delivery is safely in the database: a crash after the answer loses
nothing, and a redelivery of the same id is recognised and not run twice.

Whatever arrives, the answer is a status that says what was wrong, never a 500: the endpoint
is open to the internet, and GitHub shows a failed delivery's answer to the App's owner, who
must be able to tell a bad payload (400, redelivering will not help) from the service being
down (503, redelivery will). So the checks come in the order that costs the least:

1. the signature header's form, before a byte of the body is read: an unsigned request is
   refused without buffering what it sends (401);
2. the declared and the received size against `max_body_bytes` (413);
3. the signature itself, over the body (401);
4. the event and delivery headers (400): both end up in the database and the event name in
   a metric's label, so they are bounded;
5. the body as JSON (400): numbers of more digits than any GitHub sends, nesting deeper than
   its payloads go, text PostgreSQL cannot hold (NUL, lone surrogates) and integers beyond
   64 bits are refused with the field's path;
6. routing (bot.github.events, 400 naming a missing field), then the values the store's columns
   hold (a pull request number is a 32-bit integer), then the database (503 when it is
   down; 400 if it refuses a value after all).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bot.app import dashboard, login, logs, metrics
from bot.app.service import Service
from bot.github import events
from bot.github.payload import PayloadRefused, parse, step

log = logging.getLogger("gatekeeper.webhook")

# GitHub signs with HMAC SHA-256 in lower-case hex; the header is ASCII or it is not GitHub's.
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")
# GitHub's event names are lower-case words joined by underscores.
_EVENT = re.compile(r"[a-z0-9_]{1,64}")
# GitHub's delivery ids are GUIDs (36 characters); redeliveries keep the id. Other senders
# (tests, the bench) use shorter ones, so anything printable is taken, within a bound that
# keeps the id well inside a B-tree index entry.
MAX_DELIVERY_ID = 100
_DELIVERY = re.compile(rf"[\x21-\x7e]{{1,{MAX_DELIVERY_ID}}}")

# Pull request and issue numbers are 32-bit on GitHub (GraphQL's Int) and in runs.pr_number.
_INT32 = (-(2**31), 2**31 - 1)
# owner (39) / name (100): GitHub's longest full name is 140 characters.
MAX_REPOSITORY = 256


def create_app(service: Service) -> FastAPI:
    # No /docs or /openapi.json: the API is documented in the README, and the schema would
    # list every route to anyone who asks, signed in or not.
    app = FastAPI(title="gatekeeper", docs_url=None, redoc_url=None, openapi_url=None)
    secret = service.settings.webhook_secret.get_secret_value().encode()
    limit = service.settings.max_body_bytes

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        signature = request.headers.get("x-hub-signature-256")
        if signature is None or not _SIGNATURE.fullmatch(signature):
            # Before reading the body: whoever cannot sign gets nothing buffered.
            return _answer(401, "missing or invalid X-Hub-Signature-256")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _answer(413, f"body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _answer(413, f"body larger than {limit} bytes")
        if not _signed(secret, bytes(body), signature):
            return _answer(401, "missing or invalid X-Hub-Signature-256")
        event = request.headers.get("x-github-event")
        delivery = request.headers.get("x-github-delivery")
        if not event or not delivery:
            return _answer(400, "X-GitHub-Event and X-GitHub-Delivery are required")
        if not _EVENT.fullmatch(event):
            return _answer(
                400,
                "X-GitHub-Event must be a GitHub event name "
                "(lower-case letters, digits and _, at most 64 characters)",
            )
        if not _DELIVERY.fullmatch(delivery):
            return _answer(
                400,
                f"X-GitHub-Delivery must be at most {MAX_DELIVERY_ID} printable ASCII "
                "characters (GitHub sends a 36-character GUID)",
            )
        # Parsing 25 MB takes a while: off the event loop, with the rest of the work.
        return await run_in_threadpool(_accept, service, event, delivery, bytes(body))

    # The dashboard and the run API behind the sign-in (bot.app.login); its pages are open.
    access = login.Access(service.settings)
    app.add_exception_handler(login.Refused, login.answer_refused)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.include_router(login.router(access))
    app.include_router(dashboard.router(service, access))
    return app


async def _bad_request(_request: Request, exc: Exception) -> JSONResponse:
    """A bad parameter of the run API (`page=10**30`, a run id past bigint) is 400 naming
    it, as every other bad input of this service is; FastAPI's own would be 422."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=400)


def _accept(service: Service, event: str, delivery: str, body: bytes) -> JSONResponse:
    with logs.bind(delivery_id=delivery):
        try:
            payload = parse(body)
        except PayloadRefused as exc:
            metrics.delivery(event, "malformed")
            return _answer(400, str(exc))
        if event == "ping":
            return _answer(200, "pong")
        try:
            return _record(service, event, delivery, payload)
        except PayloadRefused as exc:
            metrics.delivery(event, "malformed")
            return _answer(400, str(exc))
        except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as exc:
            # The delivery's own values, which the checks above should have caught: it will
            # fail the same way every time, so redelivering must not be invited.
            log.warning("delivery refused, the database cannot store it: %s", exc)
            metrics.delivery(event, "malformed")
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _answer(400, f"the database cannot store this delivery: {first}")
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            # Nothing was committed: GitHub marks the delivery failed, and the redelivery
            # sweep asks for it again once the database is back.
            log.warning("delivery refused, the database is unavailable: %s", exc)
            metrics.delivery(event, "unavailable")
            return _answer(503, "the service's database is unavailable; redeliver later")


def _find(payload: Any, wanted: object, default: str) -> str:
    """The path of the first value equal to `wanted` (of its type), for naming a field the
    router read without saying where from; `default` if none is found."""
    pending: list[tuple[Any, str]] = [(payload, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            pending.extend(
                (item, f"{path}.{step(key)}" if path else step(key))
                for key, item in reversed(list(value.items()))
            )
        elif isinstance(value, list):
            pending.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(value))))
        elif type(value) is type(wanted) and value == wanted:
            return path
    return default


def _check_columns(
    payload: dict[str, Any], routed: events.Target | events.NeedsPullRequest
) -> None:
    """The routed values against the columns that hold them (gatekeeper.runs)."""
    number = routed.pr_number
    if number is not None and not _INT32[0] <= number <= _INT32[1]:
        where = _find(payload, number, "the pull request number")
        raise PayloadRefused(f"{where} is out of range: pull request numbers are 32-bit integers")
    if len(routed.repository) > MAX_REPOSITORY:
        where = _find(payload, routed.repository, "the repository's name")
        raise PayloadRefused(
            f"{where} is longer than {MAX_REPOSITORY} characters: not a repository name"
        )


def _record(service: Service, event: str, delivery: str, payload: dict[str, Any]) -> JSONResponse:
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    try:
        routed = events.route(event, payload, delivery)
    except events.PayloadError as exc:
        raise PayloadRefused(f"malformed {event} payload: {exc}") from None
    if isinstance(routed, events.GroupDestroyed):
        return _destroyed(service, event, action, delivery, routed)
    if isinstance(routed, events.Ignored):
        fresh = service.store.record_delivery(delivery, event, action, "ignored", routed.reason)
        metrics.delivery(event, "ignored" if fresh else "duplicate")
        return _answer(200, f"ignored: {routed.reason}" if fresh else "duplicate delivery")
    _check_columns(payload, routed)
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


def _destroyed(
    service: Service, event: str, action: str | None, delivery: str, gone: events.GroupDestroyed
) -> JSONResponse:
    """A merge group GitHub dropped: its run ends now, in the store only (the worker, or the
    sweep for a run no worker holds, posts the final status: nothing slow happens here).
    Ending comes before recording the delivery: a redelivery after a failure in between ends
    nothing twice, where the other order could record a delivery that ended nothing."""
    detail = f"the merge group was destroyed ({gone.reason})"
    ended = service.store.cancel_group(gone.repository, gone.head_sha, detail)
    if not service.store.record_delivery(delivery, event, action, "cancelled", gone.reason):
        metrics.delivery(event, "duplicate")
        return _answer(200, "duplicate delivery")
    metrics.delivery(event, "accepted")
    log.info("merge group %s destroyed (%s): runs %s end", gone.head_ref, gone.reason, ended)
    return JSONResponse({"message": f"cancelled: {detail}", "runs": ended}, status_code=200)


def _signed(secret: bytes, body: bytes, header: str) -> bool:
    """`header` has passed _SIGNATURE, so it is ASCII: compared as bytes, which
    compare_digest takes whatever they hold (a str with non-ASCII raises TypeError)."""
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").lower().encode())


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)
