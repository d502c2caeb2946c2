"""Structured logs: real records through real handlers, read back as the lines they wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from bot.app import logs


class Lines:
    """A logger whose lines are written by `formatter` into memory."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.log = logging.getLogger("test.logs")
        self.log.addHandler(self.handler)

    def json(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def lines() -> Iterator[Lines]:
    captured = Lines(logs.JsonFormatter())
    level, propagate = captured.log.level, captured.log.propagate
    captured.log.setLevel(logging.DEBUG)
    captured.log.propagate = False
    yield captured
    captured.log.removeHandler(captured.handler)
    captured.log.setLevel(level)
    captured.log.propagate = propagate


@pytest.fixture
def root_restored() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level put back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_lines_are_json_with_ids_only_inside_bind(lines):
    lines.log.info("before %s", "binding")
    with logs.bind(delivery_id="abc-123", run_id=7):
        lines.log.info("inside")
    lines.log.warning("after")

    before, inside, after = lines.json()
    assert before["message"] == "before binding"
    assert before["level"] == "INFO"
    assert before["logger"] == "test.logs"
    assert datetime.fromisoformat(before["time"]).utcoffset().total_seconds() == 0
    assert "delivery_id" not in before and "run_id" not in before
    assert (inside["delivery_id"], inside["run_id"]) == ("abc-123", 7)
    assert after["level"] == "WARNING"
    assert "delivery_id" not in after and "run_id" not in after


def test_nested_binds_merge_and_restore(lines):
    with logs.bind(delivery_id="d1"):
        with logs.bind(run_id=1):
            assert logs.current() == {"delivery_id": "d1", "run_id": 1}
            with logs.bind(run_id=2):
                lines.log.info("innermost")
            lines.log.info("middle")
        lines.log.info("outer")
    assert logs.current() == {}

    innermost, middle, outer = lines.json()
    assert (innermost["delivery_id"], innermost["run_id"]) == ("d1", 2)
    assert (middle["delivery_id"], middle["run_id"]) == ("d1", 1)
    assert outer["delivery_id"] == "d1" and "run_id" not in outer


def test_a_block_that_raises_still_restores(lines):
    with pytest.raises(RuntimeError), logs.bind(run_id=3):
        raise RuntimeError("boom")
    assert logs.current() == {}


def test_concurrent_tasks_keep_their_own_ids(lines):
    async def handle(delivery: str) -> None:
        with logs.bind(delivery_id=delivery):
            await asyncio.sleep(0.01)  # the other task binds and logs meanwhile
            lines.log.info("handled")

    async def both() -> None:
        await asyncio.gather(handle("one"), handle("two"))

    asyncio.run(both())
    assert sorted(line["delivery_id"] for line in lines.json()) == ["one", "two"]


def test_exceptions_are_in_the_line(lines):
    with logs.bind(run_id=9):
        try:
            raise ValueError("bad migration")
        except ValueError:
            lines.log.exception("run failed")
    (line,) = lines.json()
    assert line["level"] == "ERROR"
    assert line["run_id"] == 9
    assert "Traceback" in line["exception"]
    assert "ValueError: bad migration" in line["exception"]


def test_extras_are_kept_and_odd_ones_do_not_break_the_line(lines):
    cycle: list = []
    cycle.append(cycle)
    when = datetime(2024, 5, 1, 12, 0)
    extra = {
        "action": "start_job",
        "job": {"id": 42, "queue": "runs", "scheduled_at": when},
        "handle": object(),
        "by_pair": {(1, 2): "tuple keys"},
        "cycle": cycle,
    }
    with logs.bind(run_id=5):
        lines.log.info("job started", extra=extra)
    (line,) = lines.json()
    assert line["action"] == "start_job"
    assert line["job"] == {"id": 42, "queue": "runs", "scheduled_at": repr(when)}
    assert line["handle"].startswith("<object object")
    assert line["by_pair"] == repr({(1, 2): "tuple keys"})
    assert line["cycle"] == "[[...]]"
    assert line["run_id"] == 5


def test_an_extra_cannot_replace_the_standard_fields(lines):
    with logs.bind(run_id=1):
        lines.log.info("real", extra={"level": "fake", "logger": "fake", "run_id": 2})
    (line,) = lines.json()
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "test.logs", "real")
    assert line["run_id"] == 2  # the caller's explicit value wins over the bound one


def test_configure_is_idempotent(root_restored, capsys):
    logs.configure()
    logs.configure()
    ours = [h for h in root_restored.handlers if h.get_name() == logs.HANDLER_NAME]
    assert len(ours) == 1
    assert root_restored.level == logging.INFO

    with logs.bind(delivery_id="abc"):
        logging.getLogger("gatekeeper.test").info("once")
    logging.getLogger("gatekeeper.test").debug("below the level")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert json.loads(out[0])["delivery_id"] == "abc"


def test_plain_mode_shows_the_bound_ids(root_restored, capsys):
    logs.configure()
    logs.configure(json=False, level=logging.DEBUG)
    log = logging.getLogger("gatekeeper.test")
    with logs.bind(delivery_id="abc", run_id=7):
        log.debug("validating")
    log.info("idle")
    bound, unbound = capsys.readouterr().out.splitlines()
    assert bound.endswith(" DEBUG gatekeeper.test: validating [delivery_id=abc run_id=7]")
    assert unbound.endswith(" INFO gatekeeper.test: idle")


def test_no_secret_of_the_environment_reaches_a_line(root_restored, capsys, monkeypatch):
    secret = "whsec-canary-0123456789"
    monkeypatch.setenv("GATEKEEPER_WEBHOOK_SECRET", secret)
    logs.configure()
    log = logging.getLogger("gatekeeper.test")
    log.warning("run 3 failed: build printed %s", secret)
    try:
        raise RuntimeError(f"token={secret}")
    except RuntimeError:
        log.exception("boom")
    out = capsys.readouterr().out
    assert secret not in out
    assert "build printed ***" in out and "token=***" in out
