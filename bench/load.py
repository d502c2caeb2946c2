"""Load test: signed deliveries through the whole service, with validation stubbed.

Why: bench/webhook.py times the acknowledgement alone, and its runs end `ignored` after one
policy read. This drives the rest of the path under load, in one process, all on 127.0.0.1:
the real FastAPI app under uvicorn, the real Store on a real PostgreSQL (LocalSandbox), the
real procrastinate worker and sweeps (`bot.app.server.working`) and the real GitHubClient
(personal-token mode) against a GitHub stand-in (http.server). Only `Service._validate`, the
clone + sandbox + checks, is replaced by a stub that sleeps 20 ms and approves.

    .venv/bin/python bench/load.py [--count 1000] [--repos 25] [--prs 4] [--concurrency 8]
                                   [--workers 4] [--no-pacing]

`--count` `pull_request.synchronize` deliveries (the shared real payload, each a new head SHA
on a `builder/` branch, author MEMBER) go round-robin to `--prs` pull requests in each of
`--repos` repositories, one installation each: the client paces each installation's GitHub
calls (reads 0.25 s apart, writes 1 s apart; `--no-pacing` drops that). `--concurrency`
threads send them over keep-alive httpx clients; each answer must be 202. Then the store is
polled until every run is final and its status posted. It reports acknowledgement latency,
throughput, drain time and run times, and what bounded the drain; and it checks each head
SHA: a validated run has exactly one final status (success), a superseded one none or the
one "superseded by" error, the newest head of each pull request is validated, every check
run is completed once, each pull request has at most one sticky comment.

A measurement, not a test: exit 0 whatever the figures, 1 when something was lost or failed,
130 on Ctrl-C. PostgreSQL, the servers, the threads and the temp dir are stopped in every
case. Bounded: `--time-limit` for sending, `--drain-limit` for draining.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import uvicorn
from procrastinate import JobContext
from psycopg.rows import dict_row

from bot.app import logs
from bot.app.server import store_for, working
from bot.app.service import Service
from bot.app.settings import Settings
from bot.app.store import ACTIVE
from bot.app.webhook import create_app
from bot.github import events
from bot.github.auth import TokenCredentials
from bot.github.client import DEFAULT_PACING, GitHubClient, Pacing
from bot.judging.verdict import Decision, Risk, Stage, Verdict
from bot.sandbox.local import LocalSandbox

PAYLOAD = Path(__file__).resolve().parents[1] / "tests/fixtures/github/webhooks"
HOST = "127.0.0.1"
STUB_SECONDS = 0.02
SETTINGS = {"app_id": None, "sweep_interval": 1, "shutdown_grace": 5, "log_json": False}
NO_PACING = Pacing(writes=((1_000_000, 1.0),), seconds_between_requests=0, seconds_between_writes=0)
REPO = r"/repos/(?P<repo>[^/]+/[^/]+)"
ROUTES = [  # (verb, path, kind): everything a validated or superseded run asks of GitHub
    ("GET", REPO + r"/contents/\.github/gatekeeper\.yml", "policy"),
    ("GET", REPO, "repository"),
    ("POST", REPO + r"/statuses/(?P<sha>[0-9a-f]{40})", "status"),
    ("POST", REPO + r"/check-runs", "check-create"),
    ("PATCH", REPO + r"/check-runs/(?P<id>\d+)", "check-update"),
    ("GET", REPO + r"/issues/(?P<pr>\d+)/comments", "comments"),
    ("POST", REPO + r"/issues/(?P<pr>\d+)/comments", "comment-create"),
    ("PATCH", REPO + r"/issues/comments/(?P<id>\d+)", "comment-update"),
]


class StubService(Service):
    """The real service, but validation is a 20 ms sleep that approves; `held` times how long
    each job holds a worker (claim, GitHub calls, validation, posting the end)."""

    held: list[float]

    def perform(self, run_id: int, context: JobContext) -> None:
        start = time.monotonic()
        try:
            super().perform(run_id, context)
        finally:
            self.held.append(time.monotonic() - start)

    def _validate(self, target: events.Target, stop: Callable[[str], None]) -> Verdict:
        time.sleep(STUB_SECONDS)
        stop("stub")  # a superseded run's job is aborted here, as between real stages
        job = events.to_job(target, target.base_sha or "").model_dump(mode="json")
        stage = Stage(name="stub", seconds=STUB_SECONDS, ok=True)
        summary = "approve: stub validation (bench/load.py), nothing was run"
        return Verdict(
            decision=Decision.approve, risk=Risk.low, summary=summary, job=job, stages=[stage]
        )


class GitHub:
    """The GitHub stand-in: serves ROUTES, records statuses, check runs and comments."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()  # per repository, i.e. per installation
        self.unexpected: list[str] = []
        self.statuses: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        self.checks: dict[int, int] = {}  # check run id -> times completed
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        self.by_id: dict[int, dict[str, Any]] = {}  # comments
        self.ids = iter(range(1, 10**9))
        answer = self.answer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as GitHub

            def do_GET(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                status, data = answer(self.command, urlsplit(self.path).path, body)
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="github")

    def answer(self, verb: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            for want, pattern, kind in ROUTES:
                if verb == want and (found := re.fullmatch(pattern, path)):
                    self.counts[kind] += 1
                    self.writes[found["repo"]] += verb != "GET"
                    answered = self._serve(kind, found, body)
                    if answered[0] == 404 and kind != "policy":
                        self.unexpected.append(f"{verb} {path}: unknown id")
                    return answered
            self.unexpected.append(f"{verb} {path}")
            return 404, {"message": "Not Found (not served by the bench's stand-in)"}

    def _serve(self, kind: str, found: re.Match[str], body: dict[str, Any]) -> tuple[int, Any]:
        repo, missing = found["repo"], (404, {"message": "Not Found"})
        if kind == "policy":
            return missing  # the default policy applies
        if kind == "repository":
            return 200, {"id": 1, "full_name": repo, "private": False, "default_branch": "main"}
        if kind == "status":
            self.statuses[repo, found["sha"]].append((body["state"], body["description"]))
            return 201, {"id": next(self.ids), "state": body["state"]}
        completes = int(body.get("status") == "completed")
        if kind == "check-create":
            check = next(self.ids)
            self.checks[check] = completes
            return 201, {"id": check}
        if kind == "check-update":
            if (check := int(found["id"])) not in self.checks:
                return missing
            self.checks[check] += completes
            return 200, {"id": check}
        if kind == "comments":
            return 200, self.comments[repo, int(found["pr"])]
        if kind == "comment-create":
            comment = {"id": next(self.ids), "body": body["body"]}
            self.by_id[comment["id"]] = comment
            self.comments[repo, int(found["pr"])].append(comment)
            return 201, comment
        if (comment := self.by_id.get(int(found["id"]))) is None:  # comment-update
            return missing
        comment["body"] = body["body"]
        return 200, comment


@dataclass
class Delivery:
    repo: str
    pr: int
    sha: str
    body: bytes
    signature: str
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def deliveries(args: argparse.Namespace, secret: bytes) -> list[Delivery]:
    """`--count` synchronize payloads, round-robin over repositories and pull requests."""
    template = json.loads((PAYLOAD / "pull_request.synchronize.json").read_bytes())
    made = []
    for n in range(args.count):
        index, pr = n % args.repos, 1 + (n // args.repos) % args.prs
        repo, sha = f"bench/repo-{index:02d}", os.urandom(20).hex()
        data = copy.deepcopy(template)
        data["number"], data["after"], data["installation"] = pr, sha, {"id": 1000 + index}
        data["repository"].update(full_name=repo, name=repo.split("/")[1])
        pull = data["pull_request"]
        pull.update(number=pr, draft=False, state="open", author_association="MEMBER")
        pull["head"].update(ref=f"builder/change-{pr}", sha=sha)  # the default policy's
        pull["base"]["ref"] = "main"
        pull["head"]["repo"]["full_name"] = pull["base"]["repo"]["full_name"] = repo
        body = json.dumps(data).encode()
        signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        made.append(Delivery(repo, pr, sha, body, signature))
    return made


@dataclass
class Sent:
    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[int, Delivery] = field(default_factory=dict)  # run id -> its delivery
    seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    taken: int = 0
    last_ack: float = 0.0


def send(url: str, todo: list[Delivery], threads: int, deadline: float) -> Sent:
    """Post `todo` from `threads` threads, each with its own keep-alive client."""
    sent, queue, stop = Sent(), iter(todo), threading.Event()

    def work() -> None:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            while time.monotonic() < deadline and not stop.is_set():
                with sent.lock:
                    if (one := next(queue, None)) is None:
                        return
                    sent.taken += 1
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "pull_request",
                    "X-GitHub-Delivery": one.delivery_id,
                    "X-Hub-Signature-256": one.signature,
                }
                start = time.perf_counter()
                try:
                    answer = client.post(f"{url}/webhook", content=one.body, headers=headers)
                except httpx.HTTPError as exc:
                    answer = httpx.Response(0, text=repr(exc))
                seconds = time.perf_counter() - start
                with sent.lock:
                    if answer.status_code != 202:
                        sent.problems.append(f"delivery: {answer.status_code} {answer.text[:200]}")
                        continue
                    sent.runs[int(answer.json()["run"])] = one
                    sent.seconds.append(seconds)
                    sent.last_ack = time.monotonic()

    workers = [threading.Thread(target=work, name=f"sender-{n}") for n in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:  # Ctrl-C too: the senders stop after their request in flight
        stop.set()
        for worker in workers:
            if worker.is_alive():
                worker.join(timeout=15)
    return sent


@contextmanager
def webhook_server(service: Service) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, in a thread, as `serve` runs it."""
    config = uvicorn.Config(create_app(service), host=HOST, port=0, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the webhook server did not start")
            time.sleep(0.02)
        yield f"http://{HOST}:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def drain(database_url: str, runs: int, bound: float) -> bool:
    """Poll until every run is final and its status posted; False at the bound."""
    query = (
        "SELECT count(*), count(*) FILTER (WHERE state = ANY(%s)),"
        " count(*) FILTER (WHERE unposted) FROM gatekeeper.runs"
    )
    start = note = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            total, active, unposted = conn.execute(query, (list(ACTIVE),)).fetchone() or (0, 0, 0)
            if total >= runs and active == 0 and unposted == 0:
                return True
            if time.monotonic() - start > bound:
                return False
            if time.monotonic() - note >= 15:
                note = time.monotonic()
                print(f"  draining: {active} active, {unposted} unposted at {note - start:.0f} s")
            time.sleep(0.25)


def verify(rows: list[dict[str, Any]], sent: Sent, github: GitHub) -> list[str]:
    """What was lost or wrong: runs not final, missing, wrong or repeated final statuses."""
    stored = {row["id"]: row for row in rows}
    problems = [f"run {n} acknowledged, not in the store" for n in sent.runs.keys() - stored]
    newest: dict[tuple[str, int], int] = {}
    for run_id, one in sent.runs.items():
        newest[one.repo, one.pr] = max(run_id, newest.get((one.repo, one.pr), 0))
    for run_id, one in sorted(sent.runs.items()):
        if (row := stored.get(run_id)) is None:
            continue
        posted = github.statuses.get((one.repo, one.sha), [])
        final = [(state, text) for state, text in posted if state != "pending"]
        state, what = row["state"], f"run {run_id} ({one.sha[:7]}) {row['state']}"
        if state in ACTIVE or row["unposted"]:
            problems.append(f"{what}, not final and posted at the bound")
        elif state == "done" and [s for s, _ in final] != ["success"]:
            problems.append(f"{what}, final statuses: {final}")
        elif state == "superseded" and (
            len(final) > 1
            or (posted and not final)
            or any(t[:13] != "superseded by" for _, t in final)
        ):
            problems.append(f"{what}, statuses: {posted}")
        elif state not in ("done", "superseded"):
            problems.append(f"{what}: {(row['detail'] or '')[:200]}")
        elif newest[one.repo, one.pr] == run_id and state != "done":
            problems.append(f"{what}, but it is the newest head of {one.repo}#{one.pr}")
    known = {(one.repo, one.sha) for one in sent.runs.values()}
    problems += [f"statuses for an unknown head {key}" for key in github.statuses.keys() - known]
    problems += [f"check run {n} completed {k} times" for n, k in github.checks.items() if k != 1]
    problems += [
        f"{len(c)} sticky comments on {pr}" for pr, c in github.comments.items() if len(c) > 1
    ]
    return problems + [f"unexpected request to GitHub: {line}" for line in github.unexpected]


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] if ordered else math.nan


def bench(args: argparse.Namespace) -> int:
    logs.configure(json=False, level=logging.WARNING)
    secret = os.urandom(20).hex()
    todo = deliveries(args, secret.encode())
    with ExitStack() as stack:  # unwinds in reverse: server, worker, store, stand-in, ...
        scratch = Path(tempfile.mkdtemp(prefix="gatekeeper-bench-load-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        print("starting PostgreSQL, the GitHub stand-in, the worker and the webhook server ...")
        sandbox = stack.enter_context(LocalSandbox(database="gatekeeper", run_id="bench-load"))
        github = GitHub()
        github.thread.start()
        stack.callback(github.thread.join, 5)
        stack.callback(github.server.server_close)
        stack.callback(github.server.shutdown)
        settings = Settings(
            **SETTINGS,
            webhook_secret=secret,
            github_token="bench-token",
            github_api_url=github.url,
            database_url=sandbox.database_url,
            state_dir=scratch,
            workers=args.workers,
            repo_concurrency=args.repo_concurrency,
        )
        pacing = NO_PACING if args.no_pacing else DEFAULT_PACING
        client = GitHubClient(github.url, TokenCredentials("bench-token"), pacing=pacing)
        service = StubService(settings, stack.enter_context(store_for(settings)), client)
        service.held = []
        stack.enter_context(working(service, settings, worker=True))
        url = stack.enter_context(webhook_server(service))

        print(f"sending {len(todo)} deliveries from {args.concurrency} threads ...")
        start = time.monotonic()
        sent = send(url, todo, args.concurrency, start + args.time_limit)
        sending = (sent.last_ack or time.monotonic()) - start
        print(f"waiting for {len(sent.runs)} runs to end (bound {args.drain_limit:g} s) ...")
        drained = drain(sandbox.database_url, len(sent.runs), args.drain_limit)
        total, held = time.monotonic() - start, list(service.held)  # jobs not ended: left out
        with psycopg.connect(sandbox.database_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT id, state, detail, unposted, started_at IS NOT NULL AS started,"
                " EXTRACT(EPOCH FROM finished_at - created_at)::float8 AS seconds"
                " FROM gatekeeper.runs ORDER BY id"
            ).fetchall()
        print("stopping ...")
    problems = sent.problems + verify(rows, sent, github)
    if sent.taken < len(todo):
        problems.append(f"time limit: {len(todo) - sent.taken} deliveries not sent")

    states = Counter(row["state"] for row in rows)
    early = sum(1 for row in rows if row["state"] == "superseded" and not row["started"])
    done = [row["seconds"] for row in rows if row["state"] == "done"]
    ended = sum(n for state, n in states.items() if state not in ACTIVE)
    acks = [s * 1000 for s in sent.seconds]
    marks = (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
    latency = "  ".join(f"{name} {percentile(acks, p):.1f}" for name, p in marks)
    writes = sum(github.writes.values()) / max(1, len(held))
    repo, most = max(github.writes.items(), key=lambda item: item[1], default=("-", 0))
    pacing_note = "no pacing" if args.no_pacing else f"{most} writes, >= {most} s at 1 write/s"
    load = "/".join(f"{n:.1f}" for n in os.getloadavg())
    lines = {
        "deliveries": f"{len(sent.runs)} acknowledged of {len(todo)} ({args.repos} repos x "
        f"{args.prs} PRs, {args.concurrency} senders; load {load})",
        "ack latency": f"{latency} ms, send to answer",
        "ack throughput": f"{len(acks) / max(sending, 1e-9):.0f}/s over {sending:.1f} s",
        "drain": f"{total - sending:.1f} s from the last 202 until every run was final and posted"
        if drained
        else f"NOT drained: runs still active or unposted at the {args.drain_limit:g} s bound",
        "runs": f"done {states.pop('done', 0)}, superseded {states.pop('superseded', 0)} ({early} "
        f"before starting){''.join(f', {state} {n}' for state, n in states.items())}",
        "runs ended/s": f"{ended / total:.1f} (validated {len(done) / total:.1f}) over {total:.1f} "
        "s, first send to drained",
        "run time": f"validated, created->finished in the store: p50 "
        f"{percentile(done, 50):.1f} s, p95 {percentile(done, 95):.1f} s",
        "worker per job": f"p50 {percentile(held, 50):.2f} s, p95 {percentile(held, 95):.2f} s "
        f"for {len(held)} jobs ({writes:.1f} GitHub writes each; stub {STUB_SECONDS} s)",
        "GitHub requests": ", ".join(f"{k} {n}" for k, n in sorted(github.counts.items())),
        "drain bound": f"workers: {sum(held) / args.workers:.0f} s of jobs each ({args.workers}, "
        f"busy {sum(held) / (args.workers * total):.0%}); busiest installation ({repo}): "
        + pacing_note,
        "checked": f"{len(sent.runs)} head SHAs' statuses, {len(github.checks)} check runs, "
        f"{len(github.comments)} pull requests' comments",
        "problems": str(len(problems)),
    }
    for name, value in lines.items():
        print(f"  {name:<16} {value}")
    if problems:
        print(f"\nPROBLEMS ({len(problems)}; the first 20):", file=sys.stderr)
    for problem in problems[:20]:
        print(f"  - {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="deliveries (1000)")
    parser.add_argument("--repos", type=int, default=25, help="repositories, one installation each")
    parser.add_argument("--prs", type=int, default=4, help="pull requests per repository (4)")
    parser.add_argument("--concurrency", type=int, default=8, help="sender threads (8)")
    parser.add_argument("--workers", type=int, default=4, help="the worker's concurrency (4)")
    parser.add_argument("--repo-concurrency", type=int, default=1, help="lanes per repo (1)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds to send (120)")
    parser.add_argument("--drain-limit", type=float, default=300.0, help="seconds to drain (300)")
    parser.add_argument("--no-pacing", action="store_true", help="drop GitHub's pacing")
    args = parser.parse_args(argv)
    if min(args.count, args.repos, args.prs, args.concurrency, args.workers) < 1:
        parser.error("counts must be at least 1")
    if not PAYLOAD.is_dir():
        parser.error(f"payloads not found: {PAYLOAD} (tests/fixtures/github/webhooks)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: stop all, clean up
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows in a log file too
    try:
        return bench(args)
    except KeyboardInterrupt:
        print("interrupted: the servers, the worker and PostgreSQL were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
