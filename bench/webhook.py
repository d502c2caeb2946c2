"""Benchmark: how fast a running `gatekeeper serve` acknowledges signed webhook deliveries.

Why: GitHub gives a delivery 10 seconds and never retries by itself, so the endpoint must
answer at once and leave the work to the workers; the issue's target is p99 under 20 ms on
this machine. The acknowledgement is not free: it checks the HMAC, parses the JSON, routes
the event and commits the delivery and its run in PostgreSQL before answering 202. This
measures exactly that, from the outside, against the real `serve` process.

    .venv/bin/python bench/webhook.py [--count 1000] [--concurrency 1] [--durable]

Everything runs on 127.0.0.1 and is bounded in count and time:
- a PostgreSQL for DATABASE_URL (LocalSandbox; `--durable` turns fsync and synchronous
  commit back on, as in the embedded store `serve` keeps in its state dir);
- a GitHub stand-in (http.server, in this process) answering the reads the workers make for
  these deliveries: the policy file (404, so the default policy applies) and the repository
  (200, which `read_file` asks to tell a missing file from an invisible repository); any
  other request is logged and counts as a failure;
- `python -m bot serve` as a subprocess, in personal-token mode.

The payload is the real `pull_request.synchronize` example from tests/fixtures; its head
branch (`changes`) is not a builder branch under the default policy, so each run ends
`ignored` after one policy read: the realistic cheap path. After `--warmup` unmeasured
deliveries, `--count` deliveries (each a fresh X-GitHub-Delivery) go over one keep-alive
httpx client, with `--duplicates` redeliveries of ids already acknowledged interleaved and
timed apart (they must answer 200 "duplicate delivery"). Sending stops at `--time-limit`
and reports what it has. Then the store is polled until every run has ended: the workers
read GitHub at most once every 0.25 s (`Pacing`), i.e. about half a second per run, so
the drain bound grows with the count.

A measurement, not a test: exit 0 whatever the percentiles, 1 when something failed (a
non-2xx or missing answer, a wrong answer to a redelivery, a run not `ignored`, runs still
unfinished at the drain bound, an unexpected request to the stand-in, `serve` exiting),
130 when interrupted. The serve process, the stand-in, PostgreSQL and the temp dir are
removed in every case.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "github" / "webhooks"
PAYLOAD = FIXTURES / "pull_request.synchronize.json"
HOST = "127.0.0.1"
TARGET_P99_MS = 20.0
GITHUB_TIMEOUT = 10.0  # GitHub gives up on a delivery after this long
SERVE_START_TIMEOUT = 60.0
SERVE_STOP_TIMEOUT = 10.0
DRAIN_POLL = 0.5
DRAIN_MARGIN = 30.0
READS_PER_RUN = 2  # the policy file (404), then the repository (200)
TMP_PREFIX = "gatekeeper-bench-webhook-"
# The durability settings of the store `serve` keeps in its state dir (bot/sandbox/local.py).
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}

CONTENTS = re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/contents/\.github/gatekeeper\.yml")
REPOSITORY = re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)")


class Failed(Exception):
    """Something the bench depends on broke; the message says what."""


# --------------------------------------------------------------------------- GitHub stand-in


class StandIn:
    """The few GitHub reads the workers make for these deliveries, and a log of the rest."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.server = ThreadingHTTPServer((HOST, 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="github-stand-in", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def record(self, kind: str, line: str | None = None) -> None:
        with self.lock:
            self.counts[kind] += 1
            if line is not None and len(self.unexpected) < 100:
                self.unexpected.append(line)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as GitHub

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if found := CONTENTS.fullmatch(path):
                    stand_in.record("GET contents/.github/gatekeeper.yml")
                    self._json(404, {"message": "Not Found", "status": "404"})
                elif found := REPOSITORY.fullmatch(path):
                    stand_in.record("GET repos/{owner}/{repo}")
                    owner, name = found["repo"].split("/")
                    self._json(200, _repository_json(owner, name))
                else:
                    self._unexpected()

            def do_POST(self) -> None:
                self._unexpected()

            do_PATCH = do_PUT = do_DELETE = do_POST

            def _unexpected(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                stand_in.record("other", f"{self.command} {self.path}")
                self._json(404, {"message": "Not Found (not served by the bench's stand-in)"})

            def _json(self, status: int, data: dict[str, Any]) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # counted instead

        return Handler


def _repository_json(owner: str, name: str) -> dict[str, Any]:
    return {
        "id": 1296269,
        "name": name,
        "full_name": f"{owner}/{name}",
        "owner": {"login": owner, "id": 1, "type": "User"},
        "private": False,
        "default_branch": "master",
    }


# --------------------------------------------------------------------------- gatekeeper serve


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def start_serve(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bot", "serve", "--host", HOST, "--port", str(port)]
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )


def wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path) -> float:
    """Seconds until /healthz answered; Failed if serve exits or takes too long."""
    start = time.monotonic()
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if process.poll() is not None:
                raise Failed(f"serve exited with code {process.returncode}:\n{_tail(log_path)}")
            with suppress(httpx.TransportError):
                if client.get(f"{url}/healthz").status_code == 200:
                    return time.monotonic() - start
            if time.monotonic() - start > SERVE_START_TIMEOUT:
                raise Failed(f"serve did not answer /healthz within {SERVE_START_TIMEOUT:g} s")
            time.sleep(0.05)


def stop_serve(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(SERVE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


# --------------------------------------------------------------------------- deliveries


@dataclass
class Results:
    """What the senders saw; shared by the threads, guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: list[str] = field(default_factory=list)  # delivery ids answered 202
    runs: set[int] = field(default_factory=set)
    seconds: dict[str, list[float]] = field(default_factory=lambda: {"ack": [], "dup": []})
    failures: list[str] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)  # 0: no answer

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)


class Sender:
    """Signed deliveries of one payload over one keep-alive client, from `threads` threads."""

    def __init__(self, url: str, secret: bytes, body: bytes, event: str, threads: int) -> None:
        self.url = f"{url}/webhook"
        self.body = body
        self.event = event
        self.signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
        self.client = httpx.Client(timeout=GITHUB_TIMEOUT, limits=limits, trust_env=False)
        self.threads = threads
        self.results = Results()
        self.random = random.Random(1)

    def close(self) -> None:
        if not self.client.is_closed:
            self.client.close()

    def post(self, delivery: str) -> tuple[float, httpx.Response]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/bench",
            "X-GitHub-Event": self.event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": self.signature,  # same body, same signature
        }
        start = time.perf_counter()
        response = self.client.post(self.url, content=self.body, headers=headers)
        return time.perf_counter() - start, response

    def run(self, jobs: list[str], deadline: float, alive: threading.Event) -> bool:
        """Send `jobs` ("ack", "dup" or "warmup"); False when the deadline cut it short."""
        queue = iter(jobs)
        take = threading.Lock()

        def work() -> None:
            while alive.is_set() and time.monotonic() < deadline:
                with take:
                    kind = next(queue, None)
                if kind is None:
                    return
                try:
                    self.one(kind, alive)
                except Exception as exc:  # an answer of an unexpected shape: count it, go on
                    self.results.fail(f"{kind}: {type(exc).__name__}: {exc}")

        workers = [threading.Thread(target=work, name=f"sender-{n}") for n in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return next(queue, None) is None

    def one(self, kind: str, alive: threading.Event) -> None:
        results = self.results
        delivery = str(uuid.uuid4())
        if kind == "dup":
            with results.lock:
                if results.acked:
                    delivery = self.random.choice(results.acked)
                else:
                    kind = "ack"  # nothing acknowledged yet (the first jobs are in flight)
        try:
            seconds, response = self.post(delivery)
        except httpx.HTTPError as exc:
            with results.lock:
                results.statuses[0] += 1
            results.fail(f"{kind} {delivery}: no answer: {type(exc).__name__}: {exc}")
            if isinstance(exc, httpx.ConnectError):
                alive.clear()  # serve is gone: stop sending
            return
        with results.lock:
            results.sent[kind] += 1
            results.statuses[response.status_code] += 1
        try:
            message = response.json().get("message")
        except ValueError:
            message = response.text[:200]
        if kind == "dup":
            if response.status_code != 200 or message != "duplicate delivery":
                results.fail(f"redelivery {delivery}: {response.status_code} {message!r}")
            with results.lock:
                results.seconds["dup"].append(seconds)
            return
        if response.status_code != 202:
            results.fail(f"delivery {delivery}: {response.status_code} {message!r}")
            return
        with results.lock:
            results.acked.append(delivery)
            results.runs.add(int(response.json()["run"]))
            if kind == "ack":
                results.seconds["ack"].append(seconds)


def schedule(count: int, duplicates: int) -> list[str]:
    """`count` fresh deliveries with `duplicates` redeliveries spread evenly among them."""
    jobs = ["ack"] * count
    for n in range(duplicates, 0, -1):
        jobs.insert(round(n * count / (duplicates + 1)), "dup")
    return jobs


# --------------------------------------------------------------------------- the store


def drain(database_url: str, runs: int, bound: float, alive: threading.Event) -> dict[str, int]:
    """Poll until every run has left queued/running, or `bound` seconds; the state counts."""
    start = time.monotonic()
    last_note = start
    states: dict[str, int] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT state, count(*) FROM gatekeeper.runs GROUP BY state ORDER BY state"
            ).fetchall()
            states = {state: int(n) for state, n in rows}
            pending = sum(states.get(s, 0) for s in ("queued", "running"))
            if pending == 0 and sum(states.values()) >= runs:
                return states
            now = time.monotonic()
            if not alive.is_set() or now - start > bound:
                return states
            if now - last_note >= 15:
                print(f"  draining: {pending} runs queued or running after {now - start:.0f} s")
                last_note = now
            time.sleep(DRAIN_POLL)


def odd_runs(database_url: str) -> list[tuple[str, str, int]]:
    """(state, detail, count) of runs that did not end as expected for this payload."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, detail, count(*) FROM gatekeeper.runs"
            " WHERE state <> 'ignored' OR detail NOT LIKE %s"
            " GROUP BY state, detail ORDER BY count(*) DESC LIMIT 10",
            ("head branch % is not a builder branch%",),
        ).fetchall()
    return [(state, detail, int(n)) for state, detail, n in rows]


# --------------------------------------------------------------------------- report


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(name: str, seconds: list[float]) -> str:
    if not seconds:
        return f"  {name:<16} none"
    values = sorted(s * 1000 for s in seconds)
    cells = "  ".join(
        f"{label} {percentile(values, p):7.2f}"
        for label, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
    )
    return f"  {name:<16} n={len(values):<5} {cells}  ms"


@contextmanager
def _section(title: str) -> Iterator[None]:
    start = time.monotonic()
    print(f"{title} ...", flush=True)
    yield
    print(f"  ({time.monotonic() - start:.1f} s)", flush=True)


# --------------------------------------------------------------------------- main


def bench(args: argparse.Namespace) -> int:
    from bot.github.client import DEFAULT_PACING
    from bot.sandbox.local import LocalSandbox

    body = args.payload.read_bytes()
    event = args.payload.name.split(".")[0]
    secret = os.urandom(20).hex()
    failures: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    settings = DURABLE if args.durable else None
    sandbox = LocalSandbox(database="gatekeeper", settings=settings, run_id="bench-webhook-db")
    stand_in = StandIn()
    serve: subprocess.Popen[bytes] | None = None
    sender: Sender | None = None
    log_path = scratch / "serve.log"
    alive = threading.Event()
    alive.set()
    try:
        with _section("starting PostgreSQL, the GitHub stand-in and gatekeeper serve"):
            sandbox.start()
            stand_in.start()
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("GATEKEEPER_") and k != "DATABASE_URL"
            }
            env.update(
                GATEKEEPER_WEBHOOK_SECRET=secret,
                GATEKEEPER_GITHUB_TOKEN="bench-token",
                GATEKEEPER_GITHUB_API_URL=stand_in.url,
                GATEKEEPER_STATE_DIR=str(scratch / "state"),
                DATABASE_URL=sandbox.database_url,
            )
            port = _free_port()
            serve = start_serve(env, port, log_path)
            url = f"http://{HOST}:{port}"
            up = wait_healthy(serve, url, log_path)
            mode = "durable (fsync on)" if args.durable else "sandbox defaults (fsync off)"
            print(f"  serve answered /healthz after {up:.1f} s; PostgreSQL: {mode}")

        sender = Sender(url, secret.encode(), body, event, args.concurrency)
        deadline = time.monotonic() + args.time_limit
        # Watch serve while sending: a crash ends the sending at once.
        watcher = threading.Thread(target=_watch, args=(serve, alive), daemon=True)
        watcher.start()
        with _section(f"{args.warmup} warm-up deliveries"):
            sender.run(["warmup"] * args.warmup, deadline, alive)
        jobs = schedule(args.count, args.duplicates)
        title = (
            f"{args.count} deliveries and {args.duplicates} redeliveries of {len(body)} bytes,"
            f" concurrency {args.concurrency}"
        )
        with _section(title):
            start = time.monotonic()
            complete = sender.run(jobs, deadline, alive)
            elapsed = time.monotonic() - start
        results = sender.results
        sender.close()
        if not complete:
            cut = "serve stopped" if not alive.is_set() else f"time limit {args.time_limit:g} s"
            print(f"  STOPPED ({cut}): reporting what was sent")
        rate = sum(results.sent.values()) / elapsed if elapsed else 0.0
        load = "/".join(f"{n:.1f}" for n in os.getloadavg())  # others' work skews the tail
        print(f"\nacknowledgement latency, send to response ({rate:.0f} requests/s, load {load}):")
        print(summary("202 accepted", results.seconds["ack"]))
        print(summary("200 duplicate", results.seconds["dup"]))
        answers = ", ".join(
            f"{status or 'none'} {n}" for status, n in sorted(results.statuses.items())
        )
        bad = sum(n for status, n in results.statuses.items() if not 200 <= status < 300)
        print(f"  answers by status (warm-up included): {answers or 'none'}")
        print(f"  non-2xx or no answer: {bad}; unexpected answers in all: {len(results.failures)}")
        acks = sorted(results.seconds["ack"])
        if acks:
            p99 = percentile(acks, 99) * 1000
            verdict = "met" if p99 < TARGET_P99_MS else "NOT met"
            print(f"  target p99 < {TARGET_P99_MS:g} ms: {verdict} (p99 {p99:.2f} ms)")
        failures += results.failures

        runs = len(results.runs)
        pacing = DEFAULT_PACING.seconds_between_requests
        bound = args.drain_timeout
        if bound is None:
            bound = DRAIN_MARGIN + 1.5 * runs * READS_PER_RUN * pacing
        with _section(f"\nwaiting for the workers to end {runs} runs (bound {bound:.0f} s)"):
            states = drain(sandbox.database_url, runs, bound, alive)
        by_state = ", ".join(f"{s} {n}" for s, n in states.items())
        print(f"  runs by state: {by_state or 'none'}")
        pending = sum(states.get(s, 0) for s in ("queued", "running"))
        if pending:
            failures.append(f"{pending} runs still queued or running after {bound:.0f} s")
        if sum(states.values()) != runs:
            failures.append(f"the store holds {sum(states.values())} runs, {runs} were accepted")
        for state, detail, n in odd_runs(sandbox.database_url):
            if state not in ("queued", "running"):
                failures.append(f"{n} runs ended {state}: {detail[:300]}")
        reads = ", ".join(f"{kind} {n}" for kind, n in sorted(stand_in.counts.items()))
        print(f"  GitHub stand-in: {reads or 'no requests'}")
        for line in stand_in.unexpected[:10]:
            failures.append(f"unexpected request to the GitHub stand-in: {line}")
    except Failed as exc:
        failures.append(str(exc))
    finally:
        alive.clear()  # sender threads still running (Ctrl-C) stop at their next job
        if sender is not None:
            sender.close()
        if serve is not None:
            crashed = serve.poll() is not None
            code = stop_serve(serve)
            if crashed:
                failures.append(f"serve exited by itself with code {code}")
            if failures:
                print(f"\nserve log (last lines):\n{_tail(log_path)}", file=sys.stderr)
        stand_in.stop()
        sandbox.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"\nFAILED ({len(failures)}):", file=sys.stderr)
        for failure in failures[:20]:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


def _watch(process: subprocess.Popen[bytes], alive: threading.Event) -> None:
    while alive.is_set():
        if process.poll() is not None:
            alive.clear()
            return
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="fresh deliveries (1000)")
    parser.add_argument("--concurrency", type=int, default=1, help="sender threads (1)")
    parser.add_argument("--duplicates", type=int, default=50, help="redeliveries (50)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured deliveries first (10)")
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds for all sending (120)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds for the workers to end every run (default: from the count and pacing)",
    )
    parser.add_argument(
        "--durable", action="store_true", help="PostgreSQL with fsync on, as serve's own store"
    )
    parser.add_argument("--payload", type=Path, default=PAYLOAD, help="<event>.<action>.json")
    args = parser.parse_args(argv)
    if args.count < 1 or args.concurrency < 1 or args.duplicates < 0 or args.warmup < 0:
        parser.error("--count and --concurrency must be at least 1, the others at least 0")
    if args.duplicates > args.count:
        parser.error("--duplicates must not exceed --count")
    if not args.payload.is_file():
        parser.error(f"payload not found: {args.payload} (tests/fixtures/github/webhooks)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: stop children, clean up
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a log file too
    try:
        return bench(args)
    except KeyboardInterrupt:
        print("interrupted: serve, the stand-in and PostgreSQL were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
