"""GitHub's own OpenAPI description, used to route, validate and shape the fake GitHub's traffic.

The fake must refuse every request that the real api.github.com would refuse, so the rules are
not written by hand: they come from the subset of GitHub's REST description kept in
tests/fixtures/github/openapi/ (see SOURCE.md beside it). This module

* finds the file in the repository and fails loudly when it is missing: a skipped contract
  test proves nothing;
* routes a request to its operation itself. GitHub's paths carry parameters that contain
  slashes (``contents/{path}``, ``git/ref/{ref}``, ``commits/{ref}/statuses`` with a branch
  such as ``builder/x``), which openapi-core's path templates (one segment per parameter)
  cannot match, so the router resolves the operation and hands openapi-core the pattern;
* validates requests (parameters and JSON body) and responses with openapi-core;
* builds skeleton objects from response schemas (every required field, placeholder values) so
  that the fake's answers carry every field GitHub promises and PyGithub may read.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_RELATIVE_PATH = Path("fixtures/github/openapi/api.github.com.subset.json")

# Path parameters that GitHub lets span several segments. Everything else is one segment.
MULTI_SEGMENT_PARAMETERS = frozenset({"path", "ref", "basehead"})

# Placeholder values for skeleton strings, by JSON-schema format.
_FORMAT_PLACEHOLDERS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "uri": "https://github.invalid/",
    "email": "noreply@github.invalid",
}


class SpecMissingError(RuntimeError):
    """The OpenAPI description is not where the repository layout says it must be."""


def spec_path() -> Path:
    """Where the subset lives: tests/fixtures/github/openapi/ (tests/github/openapi.py ->
    parents[1])."""
    return Path(__file__).resolve().parents[1] / SPEC_RELATIVE_PATH


def load_spec_document(path: Path | None = None) -> dict[str, Any]:
    """Read the description, or explain exactly what is missing (never skip the contract tests)."""
    path = path or spec_path()
    if not path.is_file():
        raise SpecMissingError(
            f"GitHub's OpenAPI description is missing: expected {path.resolve()} "
            "(copy it from shared/fixtures/github/openapi/). The fake GitHub validates every "
            "request against it and cannot run without it."
        )
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Route:
    """One operation of the description, with the regular expression that matches its paths."""

    operation_id: str
    method: str
    pattern: str
    regex: re.Pattern[str]
    literal_length: int
    multi_segment: int


@dataclass(frozen=True)
class RouteMatch:
    """A request resolved to an operation; ``params`` are percent-decoded path parameters."""

    route: Route
    params: dict[str, str]

    @property
    def operation_id(self) -> str:
        return self.route.operation_id


@dataclass(frozen=True)
class RouteMiss:
    """No operation: either no path matches, or the path exists with other methods only."""

    reason: str
    allowed_methods: tuple[str, ...] = ()


@dataclass
class SpecRequest:
    """openapi-core's ``Request`` protocol (plus ``path_pattern``) for one incoming request.

    Why our own adapter instead of the Starlette one: we already resolved the operation (see the
    module docstring) and must hand openapi-core the pattern and the decoded path parameters.
    """

    method: str
    path: str
    path_pattern: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters
    host_url: str = "http://127.0.0.1"

    @classmethod
    def build(
        cls,
        match: RouteMatch,
        *,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
        host_url: str,
    ) -> SpecRequest:
        header_list = list(headers)
        content_type = next(
            (v for k, v in header_list if k.lower() == "content-type"), "application/json"
        )
        return cls(
            method=match.route.method,
            path=path,
            path_pattern=match.route.pattern,
            body=body if body else None,
            content_type=content_type.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(list(query)),
                header=Headers(header_list),
                cookie=ImmutableMultiDict(),
                path=dict(match.params),
            ),
            host_url=host_url,
        )


@dataclass
class SpecResponse:
    """openapi-core's ``Response`` protocol for one of the fake's answers."""

    status_code: int
    data: bytes | None
    content_type: str = "application/json"
    headers: Mapping[str, Any] = field(default_factory=dict)


class GitHubSpec:
    """The loaded description: routing, validation and response skeletons."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        # Server-relative matching: the fake serves the API at its own root (like GitHub
        # Enterprise without /api/v3), not at https://api.github.com.
        validated = copy.deepcopy(document)
        validated["servers"] = [{"url": "/"}]
        _allow_null_in_nullable_enums(validated)
        _drop_discriminators_over_non_objects(validated)
        self.api = OpenAPI.from_dict(validated)
        self.routes = _compile_routes(document)
        self.operations: dict[str, dict[str, Any]] = {
            route.operation_id: document["paths"][route.pattern][route.method]
            for route in self.routes
        }
        self._skeletons: dict[str, Any] = {}

    # -- routing -----------------------------------------------------------------------------

    def match(self, method: str, raw_path: str) -> RouteMatch | RouteMiss:
        """Resolve ``raw_path`` (still percent-encoded, without query) to an operation."""
        method = method.lower()
        path_hits: list[tuple[Route, re.Match[str]]] = []
        for route in self.routes:
            found = route.regex.fullmatch(raw_path)
            if found:
                path_hits.append((route, found))
        if not path_hits:
            return RouteMiss(f"no operation in GitHub's REST description matches {raw_path}")
        for route, found in path_hits:
            if route.method == method:
                params = {
                    name: unquote(value) for name, value in found.groupdict().items() if value
                }
                return RouteMatch(route, params)
        allowed = tuple(sorted({route.method.upper() for route, _ in path_hits}))
        return RouteMiss(
            f"{method.upper()} is not an operation of {path_hits[0][0].pattern} "
            f"(it has {', '.join(allowed)})",
            allowed,
        )

    # -- validation --------------------------------------------------------------------------

    def request_errors(self, request: SpecRequest) -> list[str]:
        """Every reason GitHub's description gives to refuse ``request``, as readable text."""
        return [_describe(error) for error in self.api.iter_request_errors(request)]

    def response_errors(self, request: SpecRequest, response: SpecResponse) -> list[str]:
        """Every way the fake's ``response`` departs from the description (a fake bug)."""
        return [_describe(error) for error in self.api.iter_response_errors(request, response)]

    # -- shaping -----------------------------------------------------------------------------

    def skeleton(self, schema_name: str) -> Any:
        """A value for ``#/components/schemas/<schema_name>`` with every required field set.

        Placeholders: first enum value, ``None`` where nullable, zero, false, empty list, and
        fixed strings by format. Callers overlay the real values with ``deep_merge``.
        """
        if schema_name not in self._skeletons:
            reference = {"$ref": f"#/components/schemas/{schema_name}"}
            self._skeletons[schema_name] = self._fill(reference, depth=0)
        return copy.deepcopy(self._skeletons[schema_name])

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow local ``$ref`` pointers until a real schema (or parameter, response) appears."""
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _fill(self, schema: dict[str, Any], depth: int) -> Any:
        schema = self.resolve(schema)
        if depth > 12:  # deep enough for GitHub's objects; guards against recursive schemas
            return None
        if schema.get("nullable") and depth > 0:  # a nullable top-level schema still gets a body
            return None
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                value = self._fill(part, depth + 1)
                if isinstance(value, dict):
                    merged.update(value)
            return merged
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return self._fill(schema[key][0], depth + 1)
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type") or ("object" if "properties" in schema else None)
        if kind == "object":
            properties = schema.get("properties", {})
            return {
                name: self._fill(properties.get(name, {}), depth + 1)
                for name in schema.get("required", [])
            }
        if kind == "array":
            return []
        if kind == "integer" or kind == "number":
            return 0
        if kind == "boolean":
            return False
        if kind == "string":
            return _FORMAT_PLACEHOLDERS.get(schema.get("format", ""), "")
        return None


def deep_merge(base: Any, overlay: Any) -> Any:
    """``overlay`` wins; nested objects merge key by key (so skeleton fields survive)."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = deep_merge(base.get(key), value) if key in base else value
        return merged
    return overlay


@functools.cache
def github_spec() -> GitHubSpec:
    """The description, loaded once per test session (parsing and checking it takes ~0.5 s)."""
    return GitHubSpec(load_spec_document())


def _allow_null_in_nullable_enums(node: Any) -> None:
    """Spell out, in place, that ``nullable`` schemas accept null where openapi-core would not.

    GitHub's description marks fields like a check run's ``conclusion`` as ``nullable`` with an
    enum that lacks null, and a commit's ``author`` as a nullable ``oneOf``; GitHub answers null
    in both. OpenAPI 3.0.3 (and openapi-core) accept null there only when the enum lists it or
    an alternative takes it, so null is added to the enum or as one more alternative.
    """
    if isinstance(node, dict):
        enum = node.get("enum")
        if node.get("nullable") and isinstance(enum, list) and None not in enum:
            enum.append(None)
        for key in ("oneOf", "anyOf"):  # nullable alternatives: null is one more alternative
            alternatives = node.get(key)
            nullable = node.get("nullable") and isinstance(alternatives, list)
            if nullable and {"enum": [None]} not in alternatives:
                alternatives.append({"enum": [None]})
        for value in node.values():
            _allow_null_in_nullable_enums(value)
    elif isinstance(node, list):
        for value in node:
            _allow_null_in_nullable_enums(value)


def _drop_discriminators_over_non_objects(document: dict[str, Any]) -> None:
    """Remove discriminators whose alternatives are not all objects, in place.

    ``repos/get-content`` answers one of a directory (an array), a file, a symlink or a
    submodule, with a discriminator on ``type`` that maps "array" to the directory; an array
    has no property to discriminate on, so validators reject every directory listing. Without
    the discriminator, plain ``oneOf`` still tells the four apart.
    """
    schemas = document.get("components", {}).get("schemas", {})

    def is_object(alternative: dict[str, Any]) -> bool:
        ref = alternative.get("$ref", "")
        target = schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else alternative
        return target.get("type", "object") == "object"

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            alternatives = node.get("oneOf") or node.get("anyOf")
            if (
                "discriminator" in node
                and alternatives
                and not all(is_object(a) for a in alternatives)
            ):
                del node["discriminator"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def _compile_routes(document: dict[str, Any]) -> list[Route]:
    routes: list[Route] = []
    for pattern, item in document["paths"].items():
        regex_parts: list[str] = []
        literal_length = 0
        multi = 0
        for piece in re.split(r"(\{[^}]+\})", pattern):
            if piece.startswith("{") and piece.endswith("}"):
                name = piece[1:-1]
                if name in MULTI_SEGMENT_PARAMETERS:
                    multi += 1
                    regex_parts.append(f"(?P<{_group(name)}>.+?)")
                else:
                    regex_parts.append(f"(?P<{_group(name)}>[^/]+)")
            else:
                literal_length += len(piece)
                regex_parts.append(re.escape(piece))
        regex = re.compile("".join(regex_parts))
        for method, operation in item.items():
            if method in {"get", "put", "post", "patch", "delete", "head", "options"}:
                routes.append(
                    Route(operation["operationId"], method, pattern, regex, literal_length, multi)
                )
    # Most specific first: fewest multi-segment parameters, then most literal text.
    routes.sort(key=lambda r: (r.multi_segment, -r.literal_length))
    return routes


def _group(name: str) -> str:
    """Regex group names must be identifiers; GitHub's parameter names already are."""
    if not name.isidentifier():
        raise ValueError(f"path parameter {name!r} is not an identifier")
    return name


def _describe(error: BaseException) -> str:
    """One line per problem: openapi-core's message plus each JSON-schema error, shortened."""
    text = str(error).split(":", 1)[0] if error.__cause__ is not None else str(error)
    cause = error.__cause__
    schema_errors = getattr(cause, "schema_errors", None)
    if schema_errors:
        details = "; ".join(_describe_schema_error(e) for e in schema_errors)
        return f"{text}: {details}"
    if cause is not None:
        return f"{text}: {_shorten(str(cause))}"
    return _shorten(text)


def _describe_schema_error(error: Any) -> str:
    location = ".".join(str(part) for part in error.absolute_path) or "(body)"
    instance = error.instance
    if error.validator == "maxItems":
        message = f"has {len(instance)} items, at most {error.validator_value} allowed"
    elif error.validator == "maxLength":
        message = f"is {len(instance)} characters long, at most {error.validator_value} allowed"
    elif error.validator == "enum":
        message = f"{_shorten(repr(instance))} is not one of {error.validator_value}"
    else:
        message = _shorten(error.message)
    return f"{location} {message}"


def _shorten(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
