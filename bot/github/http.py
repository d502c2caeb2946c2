"""Retries and errors shared by the App authentication and the REST client.

Retrying is PyGithub's `GithubRetry` (a urllib3 `Retry`), which already does most of what
GitHub asks of a client:

- 5xx answers and connection errors: retried with exponential backoff (urllib3's
  `backoff_factor`, `backoff_max`, `backoff_jitter`) a bounded number of times;
- `Retry-After`: urllib3 sleeps that long before the retry (capped by `retry_after_max`);
- 403 with GitHub's secondary rate limit message: retried after `secondary_rate_wait`; with the
  primary limit's message: after `X-RateLimit-Reset`; any other 403 is raised at once;
- `max_rate_limit_wait`: a wait longer than this fails the request instead of holding a run.

What it lacks, and `_GitHubRetry` adds: a 429 (GitHub's other secondary-limit status) without
`Retry-After` gets the same minimum wait as a 403 one. The settings here also retry every
method (GithubRetry leaves PATCH out, and every check run update is a PATCH), and hand the last
answer back instead of urllib3's `MaxRetryError`, so the error carries GitHub's message.

Metrics: `_GitHubRetry` also counts each request sent (`metrics.github_call`). It is the one
object that sees every attempt: PyGithub's session and the token exchange's both retry with
it, and urllib3 consults it about each answer, including those it retries and never hands
back. The rate-limit gauge (`metrics.github_rate_limit`) needs headers, which urllib3 shows it
only for answers it may retry: the final answer's are read where it arrives (`github_errors`,
the client, the token exchange).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from github.GithubException import GithubException
from github.GithubRetry import GithubRetry

from bot.app import metrics

API_VERSION = "2022-11-28"
USER_AGENT = "gatekeeper"
MEDIA_TYPE = "application/vnd.github+json"


@dataclass(frozen=True)
class Retries:
    """How long to keep trying before a request fails; tests shrink every delay."""

    attempts: int = 5  # retries after the first try
    # The n-th consecutive retry waits backoff * 2**(n-1) seconds (the first one none), at most
    # backoff_max, plus up to `jitter` random seconds so that workers do not retry in step.
    backoff: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 1.0
    # GitHub: without Retry-After, wait at least a minute after a secondary rate limit.
    secondary_rate_wait: float = 60.0
    # The longest wait for a rate limit: a later primary-limit reset fails the request, and a
    # longer Retry-After is cut to this.
    max_wait: float = 900.0
    timeout: float = 15.0


DEFAULT_RETRIES = Retries()


class GitHubError(Exception):
    """A request GitHub refused, or one that got no answer (`status` None).

    Carries GitHub's `message` and validation `errors` only: never the request's headers,
    which hold the token.
    """

    def __init__(
        self, status: int | None, message: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def has_code(self, code: str) -> bool:
        """Whether one of GitHub's validation errors has this `code` (e.g. "already_exists")."""
        return any(isinstance(e, dict) and e.get("code") == code for e in self.errors)

    def __str__(self) -> str:
        if self.status is None:
            return f"GitHub did not answer: {self.message}"
        return f"GitHub answered {self.status}: {self.message}"


class _GitHubRetry(GithubRetry):
    """`GithubRetry`, plus a minimum wait after a 429 that gives no `Retry-After`, and the
    count of requests sent."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        # urllib3 asks this exactly once about every answer, whether it retries it or not.
        metrics.github_call(method, status_code)
        return super().is_retry(method, status_code, has_retry_after)

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> GithubRetry:
        # urllib3 calls this for each answer `is_retry` accepted, and for each attempt that
        # got no answer (counted here).
        if error is not None:
            metrics.github_call(str(method), None)
        if response is not None:
            metrics.github_rate_limit(response.headers)
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if (
            response is not None
            and response.status == 429
            and "Retry-After" not in response.headers
        ):
            ceiling = self.max_rate_limit_wait if self.max_rate_limit_wait is not None else math.inf
            wait = min(max(retry.get_backoff_time(), self.secondary_rate_wait), ceiling)
            retry.get_backoff_time = lambda: wait  # type: ignore[method-assign]
        return retry  # type: ignore[return-value]


def github_retry(retries: Retries) -> GithubRetry:
    return _GitHubRetry(
        total=retries.attempts,
        backoff_factor=retries.backoff,
        backoff_max=retries.backoff_max,
        backoff_jitter=retries.jitter,
        secondary_rate_wait=retries.secondary_rate_wait,
        max_rate_limit_wait=retries.max_wait,
        retry_after_max=math.ceil(retries.max_wait),
        # GithubRetry adds 403, which it retries only for rate limits.
        status_forcelist=[*range(500, 600), 429],
        # Every method: a lost write is worse than a rare duplicate (see the client).
        allowed_methods=None,
        raise_on_status=False,
    )


@contextmanager
def github_errors() -> Iterator[None]:
    """Turn PyGithub's and requests' exceptions into `GitHubError`.

    The new exception is raised outside the `except` block, so it does not chain the original,
    whose request object holds the Authorization header.
    """
    try:
        yield
    except GithubException as exc:
        metrics.github_rate_limit(exc.headers or {})
        error = from_response(exc.status, exc.data)
    except requests.RequestException as exc:
        error = GitHubError(None, f"{type(exc).__name__}: {_one_line(exc)}")
    else:
        return
    raise error


def from_response(status: int, data: Any) -> GitHubError:
    """The error for a GitHub answer: its `message`, and its validation errors if any."""
    message = ""
    errors: list[dict[str, Any]] = []
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        raw = data.get("errors")
        errors = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        details = [_describe(e) for e in errors]
        if details:
            message = f"{message} ({'; '.join(details)})" if message else "; ".join(details)
    elif isinstance(data, str | bytes):
        message = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return GitHubError(status, message.strip()[:1000] or f"HTTP {status}", errors)


def _describe(error: dict[str, Any]) -> str:
    if error.get("message"):
        return str(error["message"])
    parts = [str(error.get(key)) for key in ("resource", "field", "code") if error.get(key)]
    return " ".join(parts)


def _one_line(exc: requests.RequestException) -> str:
    # str() of requests' errors names the URL (no secret: tokens travel in headers).
    return " ".join(str(exc).split())[:500]
