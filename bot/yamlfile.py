"""Load YAML into pydantic models with errors a person can act on.

PyYAML forgets where values came from and pydantic reports paths, not lines. This module
keeps the node marks from PyYAML's composer so every error names file, line and column,
the offending key, and the closest valid key when a key looks like a typo.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# libyaml's loader keeps the same marks and is about eight times faster than the pure one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """A file that cannot be used as written. `problems` lists each as 'file:line:col: message'."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


def load_model(path: str | Path, model: type[M], text: str | None = None) -> M:
    """Parse `path` (or `text`, reported as coming from `path`) into `model`."""
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(name, [f"{name}: cannot read: {exc.strerror or exc}"]) from None
    data, marks = _compose(name, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(name, [f"{name}:1:1: expected a mapping at the top level"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(name, model, err, marks, data) for err in exc.errors()]
        raise ConfigError(name, problems) from None


def _compose(name: str, text: str) -> tuple[Any, dict[Loc, tuple[int, int]]]:
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(name, [f"{where}: invalid YAML: {problem}"]) from None
    if node is None:
        return None, {}
    marks: dict[Loc, tuple[int, int]] = {}
    problems: list[str] = []
    _walk(name, node, (), marks, problems)
    if problems:
        raise ConfigError(name, problems)
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(name, [f"{name}: invalid YAML: {exc}"]) from None
    return data, marks


def _walk(name: str, node: yaml.Node, loc: Loc, marks: dict, problems: list[str]) -> None:
    marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(f"{name}:{line}:{col}: duplicate key '{key}'")
            seen.add(key)
            # Remember the key's own position: errors about a key point at the key.
            marks[(*loc, key, "__key__")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            _walk(name, value_node, (*loc, key), marks, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(name, item, (*loc, index), marks, problems)


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
