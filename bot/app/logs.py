"""Structured logs: one JSON object a line, carrying the delivery and run it belongs to.

The service works on many webhook deliveries and runs at once (web threads, queue workers), so
a line is only useful if it says which one it is about. The ids are bound with `contextvars`
(`with bind(delivery_id=..., run_id=...)`): they follow the current thread or asyncio task
without being passed down every call, and they land in each line as fields a log store can
filter on, not text to parse. Only the standard library: logging must work before, and
without, anything else.
"""

from __future__ import annotations

import json as _json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from bot.reporting import masking

HANDLER_NAME = "gatekeeper-stdout"

# Immutable, and replaced (never changed) by `bind`: a task that copied the context keeps
# exactly the ids it was started with.
_IDS: ContextVar[Mapping[str, Any]] = ContextVar("gatekeeper_log_ids", default=MappingProxyType({}))

# What every LogRecord has; anything else on a record came from a caller's `extra={...}`.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@contextmanager
def bind(**ids: Any) -> Iterator[None]:
    """Add `ids` to every line logged inside the block (this thread or asyncio task only).

    Nested blocks merge (the inner value wins for a key bound twice); leaving a block restores
    what was bound before it, also when the block raised.
    """
    token = _IDS.set(MappingProxyType({**_IDS.get(), **ids}))
    try:
        yield
    finally:
        _IDS.reset(token)


def current() -> dict[str, Any]:
    """The ids bound here and now (a copy)."""
    return dict(_IDS.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the bound ids, the caller's
    extras and the exception's traceback.

    Extras are what libraries such as procrastinate put their details in (`action`, `job`),
    so they are kept; one that JSON cannot hold is written as its `repr` rather than losing
    the line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        # An extra overrides a bound id of the same name; neither replaces the fields above.
        for key, value in {**current(), **extras}.items():
            entry.setdefault(key, _jsonable(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(entry, default=repr, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Lines for a person at a terminal, with the bound ids after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        ids = " ".join(f"{key}={value}" for key, value in current().items())
        return f"{text} [{ids}]" if ids else text


def configure(json: bool = True, level: int = logging.INFO) -> None:
    """Send every logger's lines to stdout, as JSON lines or (`json=False`) as plain text.

    Idempotent: a second call updates the one handler it installed (format, level, the current
    `sys.stdout`) instead of adding another, so each line is written once.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(sys.stdout)
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.set_name(HANDLER_NAME)
        root.addHandler(handler)
    formatter = JsonFormatter() if json else TextFormatter()
    handler.setFormatter(_Masked(formatter, masking.from_environment(os.environ)))
    root.setLevel(level)


class _Masked(logging.Formatter):
    """Whatever a line quotes (a reject's reason, a failed command's output, a library's
    exception text), no secret of the service's environment is written
    (bot/reporting/masking.py)."""

    def __init__(self, inner: logging.Formatter, masker: masking.Masker):
        super().__init__()
        self.inner, self.masker = inner, masker

    def format(self, record: logging.LogRecord) -> str:
        return self.masker.text(self.inner.format(record))


def _jsonable(value: Any) -> Any:
    """`value` if JSON can hold it (its odd parts as their `repr`), else its whole `repr`:
    non-string keys and reference cycles fail even with `default=repr`."""
    try:
        _json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return repr(value)
    return value
