"""Hypothesis strategies for the YAML a person, a typo or a hostile branch could write.

Shared by the fuzz tests of the policy loader (tests/policy) and of the suite loader
(tests/checking). Random bytes rarely get past the parser, so besides them there are
documents built from YAML's own pieces (anchors, aliases, tags, complex keys, odd numbers)
around the keys the models know, and shipped files with random edits: inputs that reach
the models and every check after them.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel

from bot.policy.yamlfile import ConfigError

# Scalars that have broken YAML loaders: non-finite and huge numbers, YAML 1.1 surprises,
# tags of other schemas, paths out of a tree, bad patterns, variables nobody defines.
TRICKY_SCALARS = [
    ".inf",
    "-.inf",
    ".nan",
    "1e999",
    "1.0e+999",
    "-1",
    "0",
    "10",
    "3.5",
    "0x1F",
    "0o17",
    "1_000",
    "1:30",
    "2024-01-01",
    "2024-13-45",
    "2001-12-14t21:59:43.10-05:00",
    "~",
    "null",
    "yes",
    "off",
    "=",
    "<<",
    "''",
    '"\\0"',
    '"\\x01"',
    "!!binary aGk=",
    "!!binary '!!'",
    "!!python/object/apply:os.system [true]",
    "!include x.yml",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a: 1]",
    "!!timestamp x",
    "!!int x",
    "!!float nan",
    "!!str [a]",
    "!!map x",
    "!!merge x",
    "9" * 5000,
    "9" * 400 + "s",
    "${run_id}",
    "${ghost}",
    "/etc/passwd",
    "../../../../etc/passwd",
    ".",
    "..",
    "$.a",
    "$[",
    "(unclosed",
    "a{99999999999}",
    "5s",
    "250ms",
    "forever",
    "true",
    "GET",
    "/healthz",
]

# Pieces spliced into shipped files: structure, anchors and aliases, tags, whitespace.
TOKENS = [
    ":",
    ": ",
    "- ",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "&b [*a, *a, *a] ",
    "<<: *a",
    "!!python/name:os.system ",
    "!tag ",
    "\t",
    "\n",
    "  ",
    "#",
    "'",
    '"',
    "|",
    ">",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\x00",
    "\ufeff",
    "\u2028",
    *TRICKY_SCALARS,
]


def model_keys(model: type[BaseModel]) -> list[str]:
    """Every key a model and the models inside it accept, so documents reach validation."""
    keys: set[str] = set()
    pending: list[Any] = [model]
    seen: set[Any] = set()
    while pending:
        annotation = pending.pop()
        if annotation in seen:
            continue
        seen.add(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, field in annotation.model_fields.items():
                keys.add(field.alias or name)
                pending.append(field.annotation)
        else:
            pending.extend(typing.get_args(annotation))
    return sorted(keys)


@st.composite
def documents(draw: st.DrawFn, keys: list[str]) -> str:
    """A block mapping of known keys whose values mix flow collections, anchors, aliases,
    complex keys and TRICKY_SCALARS, nested a few levels."""
    anchors: list[str] = []
    scalars = st.one_of(
        st.sampled_from(TRICKY_SCALARS),
        st.sampled_from(keys),
        st.from_regex(r"[a-z0-9_./${} -]{0,12}", fullmatch=True),
    )

    def value(depth: int) -> str:
        kinds = ["scalar", "alias", "list", "map", "complex"] if depth < 4 else ["scalar", "alias"]
        kind = draw(st.sampled_from(kinds))
        if kind == "alias" and anchors:
            return "*" + draw(st.sampled_from(anchors))
        if kind == "list":
            items = [value(depth + 1) for _ in range(draw(st.integers(0, 4)))]
            text = "[" + ", ".join(items) + "]"
        elif kind == "map":
            pairs = [
                f"{draw(st.sampled_from(keys))}: {value(depth + 1)}"
                for _ in range(draw(st.integers(0, 4)))
            ]
            text = "{" + ", ".join(pairs) + "}"
        elif kind == "complex":
            text = "{? [" + value(depth + 1) + "] : " + value(depth + 1) + "}"
        else:
            return draw(scalars)
        if draw(st.booleans()):
            name = f"a{len(anchors)}"
            anchors.append(name)
            return f"&{name} {text}"
        return text

    lines = [f"{draw(st.sampled_from(keys))}: {value(0)}" for _ in range(draw(st.integers(0, 6)))]
    return "\n".join(lines) + "\n"


@st.composite
def edits_of(draw: st.DrawFn, text: str) -> str:
    """`text` with a few deletions, insertions and replacements of TOKENS."""
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        length = draw(st.integers(1, 12))
        token = draw(st.sampled_from(TOKENS))
        if op == "insert":
            text = text[:at] + token + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + length :]
        else:
            text = text[:at] + token + text[at + length :]
    return text


def only_config_errors(load: Callable[[], object], name: str, seconds: float = 2.0) -> None:
    """`load` returns or raises ConfigError whose problems are each one line naming `name`,
    within `seconds`. Anything else raised fails the example with its traceback."""
    start = time.perf_counter()
    try:
        load()
    except ConfigError as exc:
        assert exc.problems, "a ConfigError without a problem"
        for problem in exc.problems:
            assert "\n" not in problem, problem
            assert name in problem, (name, problem)
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s"


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
