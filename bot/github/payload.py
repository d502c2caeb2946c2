"""GitHub's JSON payloads as the gate takes them: a webhook's body, an Actions event file.

`json.loads` alone takes what GitHub never sends and what breaks later: a 5,000-digit integer
(quadratic to convert, then refused by PostgreSQL), 100,000 levels of nesting (a
RecursionError), NaN, NUL characters and lone surrogates (refused by PostgreSQL's text).
`parse` refuses each with a message naming the field's path, so the answer is a clear 400
(or an Actions error), never a 500 or a traceback.
"""

from __future__ import annotations

import json
import re
from typing import Any

# GitHub's integers (ids, numbers, sizes) are 64-bit; 20 characters hold any of them.
_INT64 = (-(2**63), 2**63 - 1)
_MAX_INT_DIGITS = 20
# GitHub's payloads nest a dozen levels; far below Python's recursion limit.
MAX_DEPTH = 64


class PayloadRefused(ValueError):
    """The body cannot be taken as it is; the message names the field and is the answer."""


def parse(body: bytes) -> dict[str, Any]:
    """The body as a JSON object whose every value PostgreSQL can store, or PayloadRefused
    with the reason (and the field's path where there is one)."""
    try:
        payload = json.loads(body, parse_int=_parse_int, parse_constant=_no_constant)
    except RecursionError:
        raise PayloadRefused(
            f"body is not JSON GitHub sends: nested deeper than {MAX_DEPTH} levels"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PayloadRefused(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise PayloadRefused("body is not a JSON object")
    problem = _unstorable(payload)
    if problem is not None:
        raise PayloadRefused(problem)
    return payload


class _Oversized:
    """An integer literal of more digits than any 64-bit number: kept as its length, so the
    check can name its field (parse_int cannot know where it is)."""

    def __init__(self, digits: int):
        self.digits = digits


def _parse_int(text: str) -> int | _Oversized:
    # int() of a 5,000-digit string raises (and costs quadratic time below the limit).
    digits = len(text.lstrip("-"))
    return _Oversized(digits) if digits > _MAX_INT_DIGITS else int(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _unstorable(payload: dict[str, Any]) -> str | None:
    """The first value (in document order) PostgreSQL could not store or GitHub never sends,
    as a message naming its path; None when there is none. Iterative: the depth is checked
    here, not by the interpreter's stack."""
    pending: list[tuple[Any, str, int]] = [(payload, "", 0)]
    while pending:
        value, path, depth = pending.pop()
        where = path or "the body"
        if depth > MAX_DEPTH:
            return f"{where} is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            children = []
            for key, item in value.items():
                problem = _text_problem(key)
                if problem is not None:
                    return f"a key of {where} {problem}"
                children.append((item, f"{path}.{step(key)}" if path else step(key), depth + 1))
            pending.extend(reversed(children))
        elif isinstance(value, list):
            pending.extend(
                (item, f"{path}[{index}]", depth + 1)
                for index, item in reversed(list(enumerate(value)))
            )
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem is not None:
                return f"{where} {problem}"
        elif isinstance(value, _Oversized):
            return f"{where} is an integer of {value.digits} digits; GitHub's fit in 64 bits"
        elif isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            return f"{where} is out of range; GitHub's integers fit in 64 bits"
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not UTF-8 text)"
    return None


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def step(key: str) -> str:
    """A key as a path step; odd or long ones quoted and cut, so a message stays short."""
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key[:40])
