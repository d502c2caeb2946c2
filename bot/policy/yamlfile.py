"""Load YAML into pydantic models with errors a person can act on.

PyYAML forgets where values came from and pydantic reports paths, not lines. This module
keeps the node marks from PyYAML's composer so every error names file, line and column,
the offending key, and the closest valid key when a key looks like a typo.

It is also the one door policies and suites come in by, and a repository's policy is read
from a branch someone else wrote. So it refuses, as a ConfigError naming file and line,
whatever would hang, exhaust or crash a reader instead of merely failing validation:

- a file that is not a regular file (a FIFO, /dev/zero: reading either never ends) or is
  larger than MAX_BYTES, checked before a byte is read;
- bytes that are not UTF-8;
- aliases that expand the document past MAX_VALUES values ("billion laughs": PyYAML
  shares an anchored node, but every reader after it, pydantic included, walks each use),
  aliases inside the value they name (a cycle), and nesting deeper than MAX_DEPTH;
  counted on the event stream, before any node is built;
- keys that are not plain values (`? [a, b]`), tags outside YAML's safe schema
  (`!!python/object`), scalars the safe schema cannot build (`2024-13-45`, a 5000-digit
  integer) and numbers that are not finite (`.inf`, `.nan`).
"""

from __future__ import annotations

import difflib
import math
import os
import stat
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# libyaml's loader keeps the same marks and is about eight times faster than the pure one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The shipped policies and suites are under 4 KiB; these leave two orders of magnitude of
# room and still bound what one file can cost: under a second on one core.
MAX_BYTES = 256 * 1024
MAX_VALUES = 100_000  # scalars and collections, every alias counted as what it stands for
MAX_DEPTH = 100  # below Python's recursion limit for every reader that recurses

# The tags of YAML's safe schema (what SafeConstructor builds) and the merge key `<<`.
_MERGE = "tag:yaml.org,2002:merge"
_TAGS = frozenset(tag for tag in _LOADER.yaml_constructors if tag is not None) | {_MERGE}

Loc = tuple[str | int, ...]
Marks = dict[Loc, tuple[int, int]]


class ConfigError(Exception):
    """A file that cannot be used as written. `problems` lists each as 'file:line:col: message'."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Located(Generic[M]):
    """A model and where each of its values was written.

    For checks a model cannot make on its own (a suite's variables are defined by the steps
    before, or by the suites before it), so their errors still point at a line.
    """

    value: M
    path: str
    marks: Marks

    def position(self, loc: Loc, key: bool = False) -> str:
        """'file:line:col' of the value at `loc` (of its key with `key`), else of its parent."""
        line, col = _position(self.marks, loc, key)
        return f"{self.path}:{line}:{col}"


def load_model(path: str | Path, model: type[M], text: str | None = None) -> M:
    """Parse `path` (or `text`, reported as coming from `path`) into `model`."""
    return load_located(path, model, text).value


def load_located(path: str | Path, model: type[M], text: str | None = None) -> Located[M]:
    """Like `load_model`, keeping the position of every value for later errors."""
    name = str(path)
    text = read_text(path) if text is None else _checked_text(name, text)
    data, marks = _compose(name, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(name, [f"{name}:1:1: expected a mapping at the top level"])
    try:
        return Located(model.model_validate(data), name, marks)
    except ValidationError as exc:
        problems = [_describe(name, model, err, marks, data) for err in exc.errors()]
        raise ConfigError(name, problems) from None


def read_text(path: str | Path) -> str:
    """The text of a regular file of at most MAX_BYTES of UTF-8, else a ConfigError.

    The file's kind and size are checked before reading: /dev/zero never ends and a FIFO
    blocks until someone writes to it, so "read it and see" is not an option.
    """
    name = str(path)
    try:
        before = os.stat(path)
        _check_kind(name, before)
        # O_NONBLOCK: if a FIFO replaced the file since the stat, open must not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            _check_kind(name, os.fstat(handle.fileno()))
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(name, [f"{name}: cannot read: {exc.strerror or exc}"]) from None
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(name, [f"{name}: cannot read: {exc}"]) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(name, [_too_large(name)])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[start : exc.start].decode("utf-8", "replace")) + 1
        problem = f"not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        raise ConfigError(name, [f"{name}:{line}:{col}: {problem}"]) from None


def _check_kind(name: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(name, [f"{name}: {_kind(info.st_mode)}, not a regular file"])
    if info.st_size > MAX_BYTES:
        raise ConfigError(name, [_too_large(name)])


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((what for test, what in kinds if test(mode)), "a special file")


def _too_large(name: str) -> str:
    return f"{name}: larger than {MAX_BYTES // 1024} KiB, the limit for a policy or suite file"


def _checked_text(name: str, text: str) -> str:
    """Text read elsewhere (from git) meets the same limits as a file."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. from errors="surrogateescape"
        line = text.count("\n", 0, exc.start) + 1
        col = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        raise ConfigError(name, [f"{name}:{line}:{col}: not UTF-8"]) from None
    if size > MAX_BYTES:
        raise ConfigError(name, [_too_large(name)])
    return text


def _compose(name: str, text: str) -> tuple[Any, Marks]:
    _check_events(name, text)
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        problems: list[str] = []
        _check_node(name, loader, node, set(), problems)
        if problems:
            raise ConfigError(name, problems)
        marks: Marks = {}
        _walk(node, (), marks)
        data = loader.construct_document(node)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise ConfigError(name, [_yaml_problem(name, text, exc)]) from None
    except Exception as exc:  # as in _check_scalar; collections are built here
        raise ConfigError(name, [f"{name}: cannot read: {_one_line(exc)}"]) from None
    finally:
        loader.dispose()
    return data, marks


def _check_events(name: str, text: str) -> None:
    """Refuse alias bombs, cycles and deep nesting from the event stream, before composing.

    Every value counts once and every alias as the number of values its anchor stands
    for, so the count is what a reader walking the loaded data would visit. Counting,
    rather than refusing aliases, keeps `<<: *defaults` usable; the limit is absolute
    because no policy or suite needs a hundred thousand values.
    """
    loader = _LOADER(text)
    sizes: dict[str, int] = {}  # anchor -> values it stands for
    frames: list[list[Any]] = []  # open collections: [values so far, anchor]
    total = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                if len(frames) >= MAX_DEPTH:
                    raise _at(name, event, f"nested more than {MAX_DEPTH} levels deep")
                frames.append([1, event.anchor])
                count = 1
            elif isinstance(event, yaml.CollectionEndEvent):
                size, anchor = frames.pop()
                if anchor is not None:
                    sizes[anchor] = size
                if frames:
                    frames[-1][0] += size
                continue
            elif isinstance(event, yaml.AliasEvent):
                if any(anchor == event.anchor for _, anchor in frames):
                    problem = f"alias *{event.anchor} is inside the value it names (a cycle)"
                    raise _at(name, event, problem)
                count = sizes.get(event.anchor, 1)  # undefined: the composer reports it
                if total + count > MAX_VALUES:
                    problem = (
                        f"alias *{event.anchor} stands for {count:,} values and takes the "
                        f"file past {MAX_VALUES:,} values with aliases expanded"
                    )
                    raise _at(name, event, problem)
            elif isinstance(event, yaml.ScalarEvent):
                count = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                continue
            total += count
            if total > MAX_VALUES:
                raise _at(name, event, f"more than {MAX_VALUES:,} values in one file")
            # A collection adds itself to its parent when it ends, whole.
            if frames and not isinstance(event, yaml.CollectionStartEvent):
                frames[-1][0] += count
    except yaml.YAMLError as exc:
        raise ConfigError(name, [_yaml_problem(name, text, exc)]) from None
    finally:
        loader.dispose()


def _at(name: str, event: yaml.Event, problem: str) -> ConfigError:
    mark = event.start_mark
    return ConfigError(name, [f"{name}:{mark.line + 1}:{mark.column + 1}: {problem}"])


def _yaml_problem(name: str, text: str, exc: yaml.YAMLError) -> str:
    """One line naming where: PyYAML's own message spans several and quotes the input."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and getattr(exc, "problem", None):
        problem = f"{context}: {problem}"
    if mark is not None:
        where = f"{name}:{mark.line + 1}:{mark.column + 1}"
    elif isinstance(exc, yaml.reader.ReaderError):
        # The reader reports an offset into the text, not a line.
        start = text.rfind("\n", 0, exc.position) + 1
        line = text.count("\n", 0, start) + 1
        where = f"{name}:{line}:{exc.position - start + 1}"
        char = exc.character
        problem = f"{exc.reason} ({f'U+{char:04X}' if isinstance(char, int) else repr(char)})"
    else:
        where = name
    return f"{where}: invalid YAML: {_one_line(problem)}"


def _one_line(text: object) -> str:
    """Messages are one line each: a CLI prints one per problem, a report one per row."""
    return " ".join(str(text).split())


def _check_node(
    name: str, loader: Any, node: yaml.Node, seen: set[int], problems: list[str]
) -> None:
    """Check every distinct node once (aliases share nodes), in the order they were written."""
    if id(node) in seen:
        return
    seen.add(id(node))
    where = f"{name}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    if node.tag not in _TAGS:
        problems.append(
            f"{where}: unsupported tag {_short_tag(node.tag)}: only plain YAML values are "
            "read (text, numbers, booleans, null, lists, mappings); quote it to mean text"
        )
        return
    if isinstance(node, yaml.ScalarNode):
        if node.tag != _MERGE:
            _check_scalar(where, loader, node, problems)
    elif isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(
                    f"{name}:{line}:{col}: a key must be a plain value such as a name, not a {kind}"
                )
                continue
            if key_node.value in keys:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(f"{name}:{line}:{col}: duplicate key '{key_node.value}'")
            keys.add(key_node.value)
            _check_node(name, loader, key_node, seen, problems)
            _check_node(name, loader, value_node, seen, problems)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_node(name, loader, item, seen, problems)


def _check_scalar(where: str, loader: Any, node: yaml.ScalarNode, problems: list[str]) -> None:
    # Built here, one scalar at a time, so a failure has a position; the loader keeps what
    # it built for construct_document.
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problems.append(f"{where}: {_one_line(getattr(exc, 'problem', None) or exc)}")
        return
    # PyYAML's constructors raise whatever parsing the text hits: ValueError for 2024-13-45
    # or a 5000-digit integer, AttributeError for `!!timestamp x`. The text is the only input.
    except Exception as exc:
        shown = node.value if len(node.value) <= 40 else node.value[:39] + "…"
        problems.append(
            f"{where}: cannot read {shown!r} as {_short_tag(node.tag)}: {_one_line(exc)}"
        )
        return
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{where}: {node.value!r} is not a finite number")


def _short_tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix) :] if tag.startswith(prefix) else tag


def _walk(node: yaml.Node, loc: Loc, marks: Marks) -> None:
    """Record where each value was written, by its path in the data.

    Runs after _check_events, so the data it walks (aliases expanded) is bounded.
    """
    marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            # Remember the key's own position: errors about a key point at the key.
            marks[(*loc, key, "__key__")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            _walk(value_node, (*loc, key), marks)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), marks)


def _position(marks: dict[Loc, tuple[int, int]], loc: Loc, key: bool) -> tuple[int, int]:
    if key and (*loc, "__key__") in marks:
        return marks[(*loc, "__key__")]
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return (1, 1)


def _describe(name: str, model: type[BaseModel], err: dict, marks: dict, data: Any) -> str:
    # pydantic inserts union member tags and validator names into loc; keep the data path only.
    loc = _data_loc(err["loc"], marks, missing=err["type"] == "missing")
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        line, col = _position(marks, loc, key=True)
        msg = f"unknown key '{loc[-1]}' in {'.'.join(map(str, loc[:-1])) or 'the top level'}"
        valid = [v for v in _fields_at(model, loc[:-1], data) if v != loc[-1]]
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean '{close[0]}'?"
        elif valid:
            msg += f"; valid keys: {', '.join(sorted(valid))}"
        return f"{name}:{line}:{col}: {msg}"
    if err["type"] == "missing":
        line, col = _position(marks, loc[:-1], key=False)
        return f"{name}:{line}:{col}: missing required key '{dotted}'"
    line, col = _position(marks, loc, key=False)
    return f"{name}:{line}:{col}: {dotted}: {err['msg']}"


def _data_loc(loc: tuple, marks: dict, missing: bool) -> Loc:
    """Drop the union tags and validator names pydantic adds to a location; keep data keys."""
    out: list[str | int] = []
    for index, part in enumerate(loc):
        if (*out, part) in marks or (missing and index == len(loc) - 1):
            out.append(part)
    return tuple(out)


def _fields_at(model: type[BaseModel], loc: Loc, data: Any) -> list[str]:
    """Names valid at `loc` in `model`, following nested models, lists, dicts and unions."""
    current: Any = model
    for part in loc:
        current = _descend(current, part, data)
        data = data[part] if _has(data, part) else None
        if current is None:
            return []
    model_at = _pick_model(current, data)
    return [f.alias or n for n, f in model_at.model_fields.items()] if model_at else []


def _has(data: Any, part: str | int) -> bool:
    if isinstance(data, dict):
        return part in data
    return isinstance(data, list) and isinstance(part, int) and part < len(data)


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg)]
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return [annotation]


def _pick_model(annotation: Any, data: Any) -> type[BaseModel] | None:
    """The union member the data most likely meant: the one sharing the most keys with it."""
    models = [m for m in _unwrap(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    if not models:
        return None
    keys = set(data) if isinstance(data, dict) else set()

    def fit(m: type[BaseModel]) -> tuple[bool, int]:
        fields = m.model_fields.items()
        required = {f.alias or n for n, f in fields if f.is_required()}
        return required <= keys, len(keys & {f.alias or n for n, f in fields})

    return max(models, key=fit)


def _descend(annotation: Any, part: str | int, data: Any) -> Any:
    model = _pick_model(annotation, data)
    if model is not None:
        for field_name, field in model.model_fields.items():
            if part in (field_name, field.alias):
                return field.annotation
        return None
    for candidate in _unwrap(annotation):
        origin = typing.get_origin(candidate)
        if origin in (list, tuple) and isinstance(part, int):
            return typing.get_args(candidate)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(candidate)[1]
    return None
