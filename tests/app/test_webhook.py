"""The webhook endpoint against hostile or broken input: every answer is a status that says
what was wrong (401, 413, 400 naming the field), never a 500, and nothing is stored.

The app is the service's own, served by uvicorn on loopback over a real PostgreSQL store;
its GitHub client points at a closed port and no worker runs, so nothing here reaches
GitHub. Payloads are GitHub's real ones (tests/fixtures/github/webhooks) with one field
broken each. A Hypothesis property test then throws arbitrary bodies and headers at it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from bot.app.service import Service
from bot.app.settings import Settings
from bot.app.store import Store
from bot.github.auth import TokenCredentials
from bot.github.client import GitHubClient

from .test_service import Running, payload

SECRET = "webhook-input-secret"
LIMIT = 1_000_000  # bytes: small enough to send past it quickly
REPO = "octo/inventory"


@pytest.fixture
def app(store: Store) -> Iterator[Running]:
    """The webhook app; its GitHub is a closed port (port 9) and no worker takes the runs."""
    settings = Settings(
        webhook_secret=SECRET,
        database_url=store.database_url,
        max_body_bytes=LIMIT,
        log_json=False,
    )
    github = GitHubClient("http://127.0.0.1:9", TokenCredentials("unused"))
    with Running(Service(settings, store, github), worker=False) as running:
        yield running


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(
    app: Running,
    body: bytes,
    *,
    event: str | bytes = "pull_request",
    delivery: str | bytes | None = None,
    signature: str | bytes | None = "sign",
) -> httpx.Response:
    """A delivery with exactly these headers (bytes pass through as sent, non-ASCII too)."""
    headers: list[tuple[bytes, bytes]] = [
        (b"Content-Type", b"application/json"),
        (b"X-GitHub-Event", _bytes(event)),
        (b"X-GitHub-Delivery", _bytes(delivery or str(uuid.uuid4()))),
    ]
    if signature is not None:
        headers.append(
            (b"X-Hub-Signature-256", _bytes(sign(body) if signature == "sign" else signature))
        )
    return httpx.post(f"{app.url}/webhook", content=body, headers=headers, timeout=30)


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def synchronize() -> dict[str, Any]:
    """GitHub's real synchronize payload, aimed at REPO."""
    data = copy.deepcopy(payload("pull_request.synchronize"))
    data["repository"]["full_name"] = REPO
    data["installation"] = {"id": 777}
    return data


def stored(store: Store) -> tuple[int, int]:
    """(deliveries, runs) in the store."""
    with psycopg.connect(store.database_url) as conn:
        deliveries = conn.execute("SELECT count(*) FROM gatekeeper.deliveries").fetchone()
        runs = conn.execute("SELECT count(*) FROM gatekeeper.runs").fetchone()
    assert deliveries is not None and runs is not None
    return deliveries[0], runs[0]


def deliveries_counted(event: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "gatekeeper_deliveries_total", {"event": event, "outcome": outcome}
        )
        or 0.0
    )


# -- the signature ---------------------------------------------------------------------------


def test_a_signature_header_with_a_non_ascii_byte_gets_401(app, store):
    body = json.dumps(synchronize()).encode()
    # Latin-1 on the wire: the header is decoded to a str that compare_digest refused with
    # a TypeError (500) before the header's form was checked.
    bad = b"sha256=" + b"\xe9" * 64
    answer = post(app, body, signature=bad)
    assert answer.status_code == 401
    assert answer.json() == {"message": "missing or invalid X-Hub-Signature-256"}
    right_length_wrong_hex = "sha256=" + "g" * 64
    assert post(app, body, signature=right_length_wrong_hex).status_code == 401
    # An upper-case spelling of the right digest is the same digest.
    assert (
        post(app, body, signature=sign(body).upper().replace("SHA256=", "sha256=")).status_code
        == 202
    )
    assert stored(store) == (1, 1)


def _raw_request(app: Running, headers: dict[str, str], body: bytes = b"") -> tuple[str, float]:
    """Send the request line and `headers` (and `body`, maybe less than declared) over a
    socket; the status line of the answer and how long it took. Never sends the rest: an
    answer proves the server did not wait for the declared body."""
    host, port = app.url.removeprefix("http://").split(":")
    lines = ["POST /webhook HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode(), time.monotonic() - start


def test_an_unsigned_body_is_refused_before_it_is_read(app, store):
    status, seconds = _raw_request(
        app,
        {
            "Content-Type": "application/json",
            "Content-Length": str(24 * 1024 * 1024),
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
        },
        body=b'{"action": ',  # and nothing more: the server must not wait for 24 MB
    )
    assert status == "HTTP/1.1 401 Unauthorized"
    assert seconds < 5
    assert stored(store) == (0, 0)


def test_a_declared_size_over_the_cap_is_413_before_the_body_is_read(app):
    status, seconds = _raw_request(
        app,
        {
            "Content-Length": str(LIMIT + 1),
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(b"anything"),
        },
    )
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert seconds < 5


def test_a_streamed_body_over_the_cap_is_413(app, store):
    # No Content-Length (chunked): the cap is applied while the body arrives.
    chunk = b" " * 100_000

    def body() -> Iterator[bytes]:
        yield b"{"
        for _ in range(LIMIT // len(chunk) + 2):
            yield chunk
        yield b"}"

    answer = httpx.post(
        f"{app.url}/webhook",
        content=body(),
        headers={
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(b"whatever"),
        },
        timeout=30,
    )
    assert answer.status_code == 413
    assert answer.json()["message"] == f"body larger than {LIMIT} bytes"
    assert stored(store) == (0, 0)


# -- the headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"delivery": "d" * 101}, "X-GitHub-Delivery must be at most 100 printable ASCII"),
        # 3,000 characters broke the primary key's index entry: 503 "database unavailable"
        # while /readyz said ready, so GitHub would have redelivered it forever.
        ({"delivery": "d" * 3000}, "X-GitHub-Delivery must be at most 100 printable ASCII"),
        ({"delivery": "has space"}, "X-GitHub-Delivery must be at most 100 printable ASCII"),
        ({"event": "Pull Request"}, "X-GitHub-Event must be a GitHub event name"),
        ({"event": "e" * 65}, "X-GitHub-Event must be a GitHub event name"),
        ({"event": b"pull_r\xe9quest"}, "X-GitHub-Event must be a GitHub event name"),
    ],
    ids=[
        "delivery-101",
        "delivery-3000",
        "delivery-space",
        "event-space",
        "event-65",
        "event-latin1",
    ],
)
def test_bad_event_and_delivery_headers_get_400_naming_the_header(app, store, headers, message):
    body = json.dumps(synchronize()).encode()
    answer = post(app, body, **headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith(message)
    assert stored(store) == (0, 0)
    assert httpx.get(f"{app.url}/readyz", timeout=10).json() == {"status": "ready"}


def test_a_guid_delivery_id_and_one_of_100_characters_are_taken(app, store):
    body = json.dumps(synchronize()).encode()
    assert post(app, body, delivery=str(uuid.uuid4())).status_code == 202
    assert post(app, body, delivery="x" * 100).status_code == 202
    assert stored(store) == (2, 2)


def test_event_names_outside_githubs_list_are_counted_as_other(app):
    body = json.dumps({"action": "created"}).encode()
    other = deliveries_counted("other", "ignored")
    star = deliveries_counted("star", "ignored")
    for name in ("made_up_event_1", "made_up_event_2", "star"):
        answer = post(app, body, event=name)
        assert answer.status_code == 200 and "ignored" in answer.json()["message"]
    assert deliveries_counted("other", "ignored") == other + 2
    assert deliveries_counted("star", "ignored") == star + 1
    scraped = httpx.get(f"{app.url}/metrics", timeout=10).text
    assert 'event="other"' in scraped
    assert "made_up_event" not in scraped


# -- the body ---------------------------------------------------------------------------------


def _with(path: str, value: Any) -> bytes:
    """The synchronize payload with the field at dotted `path` set to `value`."""
    data = synchronize()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return json.dumps(data).encode()


def _with_raw(path: str, literal: str) -> bytes:
    """As `_with`, the value spliced in as a JSON literal json.dumps would not write."""
    marker = "__gatekeeper_marker__"
    return _with(path, marker).replace(f'"{marker}"'.encode(), literal.encode())


BAD_BODIES = {
    "5000-digit integer": (
        _with_raw("pull_request.number", "1" * 5000),
        "pull_request.number is an integer of 5000 digits",
    ),
    "100,000 levels of nesting": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
    "100 levels of nesting": (
        _with_raw("pull_request.body", "[" * 100 + "]" * 100),
        "is nested deeper than 64 levels",
    ),
    "pull request number 2**31": (
        _with("pull_request.number", 2**31),
        "pull_request.number is out of range: pull request numbers are 32-bit integers",
    ),
    "installation id 2**64": (
        _with("installation.id", 2**64),
        "installation.id is out of range; GitHub's integers fit in 64 bits",
    ),
    "NUL in head.ref": (
        _with("pull_request.head.ref", "builder/a\x00b"),
        "pull_request.head.ref contains a NUL character",
    ),
    "lone surrogate in head.ref": (
        _with_raw("pull_request.head.ref", '"builder/\\ud800"'),
        "pull_request.head.ref contains a lone UTF-16 surrogate",
    ),
    "NUL in a key": (
        _with("pull_request.head.x\x00y", 1),
        "a key of pull_request.head contains a NUL character",
    ),
    "NaN": (_with_raw("pull_request.number", "NaN"), "body is not JSON: NaN is not a JSON value"),
    "a 3,000-character repository name": (
        _with("repository.full_name", "octo/" + "r" * 3000),
        "repository.full_name is longer than 256 characters",
    ),
    "not JSON": (b"{not json", "body is not JSON"),
    "not an object": (b"[1, 2]", "body is not a JSON object"),
    "not UTF-8": (b'{"action": "\xff"}', "body is not JSON"),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
def test_bad_bodies_get_400_naming_the_field_and_store_nothing(app, store, case):
    body, message = BAD_BODIES[case]
    answer = post(app, body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]
    assert stored(store) == (0, 0)
    # The database is fine and says so; the next good delivery is taken.
    assert httpx.get(f"{app.url}/readyz", timeout=10).json() == {"status": "ready"}
    assert post(app, json.dumps(synchronize()).encode()).status_code == 202


def test_the_largest_numbers_that_fit_are_taken(app, store):
    data = synchronize()
    data["pull_request"]["number"] = 2**31 - 1
    data["installation"]["id"] = 2**63 - 1
    answer = post(app, json.dumps(data).encode())
    assert answer.status_code == 202, answer.text
    run = store.run(answer.json()["run"])
    assert (run["pr_number"], run["installation_id"]) == (2**31 - 1, 2**63 - 1)


# -- anything at all --------------------------------------------------------------------------

_ALLOWED = {200, 202, 400, 401, 413}
# Header values as a client may put them on the wire: printable latin-1, no CR/LF.
_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=120,
).map(str.strip)  # clients refuse to send a value with whitespace at either end
_events = st.one_of(
    st.just("pull_request"),
    st.sampled_from(["pull_request", "issue_comment", "check_suite", "check_run", "push", "ping"]),
    _header_text,
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_PATHS = [
    "action",
    "number",
    "pull_request.number",
    "pull_request.head.ref",
    "pull_request.head.sha",
    "pull_request.head.repo",
    "pull_request.base.ref",
    "pull_request.user.login",
    "pull_request.draft",
    "repository.full_name",
    "repository.clone_url",
    "installation.id",
    "installation",
]


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["intact", "mutated", "json", "bytes"]))
    if kind == "intact":  # a payload the service takes, with a branch name of any text
        data = synchronize()
        data["pull_request"]["head"]["ref"] = draw(st.text(max_size=60))
        data["pull_request"]["number"] = draw(st.integers(min_value=1, max_value=2**31 - 1))
        return json.dumps(data).encode()
    if kind == "mutated":  # a real payload with one to three fields replaced
        data = synchronize()
        for _ in range(draw(st.integers(1, 3))):
            *parents, last = draw(st.sampled_from(_PATHS)).split(".")
            node = data
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node[last] = draw(_json_values)
        return json.dumps(data).encode()
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    return draw(st.binary(max_size=300))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=_bodies(),
    event=_events,
    delivery=st.one_of(st.uuids().map(str), _header_text),
    signature=st.sampled_from(["sign", "sign", "sign", "wrong", "none", "garbage"]),
    garbage=_header_text,
)
def test_no_input_gets_a_500_or_a_slow_answer(app, body, event, delivery, signature, garbage):
    header = {
        "sign": "sign",
        "wrong": sign(body, "another secret"),
        "none": None,
        "garbage": garbage,
    }[signature]
    start = time.monotonic()
    answer = post(app, body, event=event, delivery=delivery or "x", signature=header)
    elapsed = time.monotonic() - start
    tally(f"HTTP {answer.status_code}")  # pytest --hypothesis-show-statistics shows the mix
    assert answer.status_code in _ALLOWED, (answer.status_code, answer.text)
    assert elapsed < 5, f"answered in {elapsed:.1f} s"
    if answer.status_code != 202:
        message = answer.json()["message"]
        assert message and not re.search(r"Traceback|Internal Server Error", message)
