"""The REST client of the service and the publisher: PyGithub underneath, typed methods on top.

Requests go through PyGithub's `Requester` (the documented way to call endpoints directly)
rather than its object model, so that each method is exactly one request per page, with a
payload this module controls (GitHub's limits are met in `limits`, and a lazy attribute never
triggers a hidden GET). What PyGithub brings: authentication, `GithubRetry` (see `http`),
pagination headers, and its pacing between requests.

Every write also passes an installation's `WriteBudget` first. Writes are retried like reads
(a dropped status write could leave a pull request pending forever); the price is that a POST
whose answer was lost may be applied twice, which the publisher tolerates (a second status or
review is harmless, and the sticky comment is looked up by its marker).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from github import Auth, Github

from bot.app import metrics
from bot.github.auth import AppCredentials, Credentials
from bot.github.http import (
    API_VERSION,
    DEFAULT_RETRIES,
    MEDIA_TYPE,
    USER_AGENT,
    GitHubError,
    Retries,
    github_errors,
    github_retry,
)

_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


@dataclass(frozen=True)
class Pacing:
    """How fast one installation goes. GitHub asks integrations for serial requests, a second
    between writes (PyGithub's pacing does both), and at most 80 content-creating requests a
    minute and 500 an hour (its secondary rate limit, which `WriteBudget` keeps to)."""

    writes: tuple[tuple[int, float], ...] = ((80, 60.0), (500, 3600.0))
    seconds_between_requests: float = 0.25
    seconds_between_writes: float = 1.0


DEFAULT_PACING = Pacing()


class WriteBudget:
    """At most `count` writes in any `seconds`, for each (count, seconds) window.

    A write beyond the budget waits (it is never dropped): a dropped final status is the bug
    this whole package exists to prevent. One budget serves all the threads of an installation.
    """

    def __init__(self, windows: Sequence[tuple[int, float]] = DEFAULT_PACING.writes) -> None:
        if not windows or any(count < 1 or seconds <= 0 for count, seconds in windows):
            raise ValueError("each write window needs a count of at least 1 and a duration")
        self._windows = tuple(windows)
        self._horizon = max(seconds for _, seconds in self._windows)
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait until one more write fits every window, count it, and return the seconds waited.

        The lock is held while waiting, so writers go in turn.
        """
        waited = 0.0
        with self._lock:
            while True:
                now = time.monotonic()
                while self._times and self._times[0] <= now - self._horizon:
                    self._times.popleft()
                wait = 0.0
                for count, seconds in self._windows:
                    recent = [t for t in self._times if t > now - seconds]
                    if len(recent) >= count:
                        # The window has room again once its count-th latest write leaves it.
                        wait = max(wait, recent[-count] + seconds - now)
                if wait <= 0:
                    self._times.append(now)
                    return waited
                time.sleep(wait)
                waited += wait


class _Shared:
    """What the clients of one `GitHubClient.for_installation` family share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.budgets: dict[int | None, WriteBudget] = {}
        # installation -> (digest of the token it was built with, Github)
        self.githubs: dict[int | None, tuple[str, Github]] = {}


class GitHubClient:
    """GitHub's REST API on behalf of one installation (`for_installation`) or, with a personal
    token, of its owner.

    `api_url` is `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise.
    """

    def __init__(
        self,
        api_url: str,
        credentials: Credentials,
        *,
        installation_id: int | None = None,
        retries: Retries = DEFAULT_RETRIES,
        pacing: Pacing = DEFAULT_PACING,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.installation_id = installation_id
        self._credentials = credentials
        self._retries = retries
        self._pacing = pacing
        self._shared = _Shared()

    def for_installation(self, installation_id: int | None) -> GitHubClient:
        """A client for another installation, sharing tokens, connections and write budgets."""
        bound = copy.copy(self)
        bound.installation_id = installation_id
        return bound

    def token_for(self, installation_id: int | None) -> str:
        """The token for git over HTTPS (`x-access-token:<token>@`); keep it out of messages."""
        return self._credentials.token_for(installation_id)

    def __repr__(self) -> str:
        return f"GitHubClient({self.api_url!r}, installation_id={self.installation_id})"

    # -- reads ---------------------------------------------------------------------------------

    def read_file(self, repo: str, ref: str, path: str) -> str | None:
        """The text of `path` at `ref` (the policy is read from the base commit), or None when
        the file does not exist there.

        GitHub answers 404 for a missing file and for a repository the token cannot see alike;
        only the first may mean "use the default policy", so a 404 is confirmed by reading the
        repository itself (which raises when that is what is missing). A missing ref raises.
        """
        location = f"/repos/{repo}/contents/{quote(path.strip('/'), safe='/')}"
        try:
            _, data = self._request("GET", location, params={"ref": ref})
        except GitHubError as exc:
            if exc.status != 404 or exc.message.lower().startswith("no commit found"):
                raise
            self._request("GET", f"/repos/{repo}")
            return None
        if not isinstance(data, dict) or data.get("type") != "file":
            kind = data.get("type") if isinstance(data, dict) else "directory"
            raise ValueError(f"{repo}@{ref}:{path} is a {kind}, not a file")
        if data.get("encoding") != "base64":
            raise ValueError(
                f"{repo}@{ref}:{path} is {data.get('size')} bytes, more than GitHub's contents "
                "API returns inline (1 MB)"
            )
        try:
            return base64.b64decode(data.get("content") or "").decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"{repo}@{ref}:{path} is not UTF-8 text") from None

    def pull_request(self, repo: str, number: int) -> dict[str, Any]:
        """GitHub's pull request object (the webhook's `pull_request` shape): `state`, `draft`,
        `base.ref`/`base.sha`, `head.ref`/`head.sha`, `head.repo.full_name` (None once a fork
        is deleted), `user.login`, `author_association`, `labels`."""
        _, data = self._request("GET", f"/repos/{repo}/pulls/{number}")
        return data

    def permission(self, repo: str, username: str) -> str:
        """`admin`, `write`, `read` or `none` (GitHub reports maintain as write, triage as
        read)."""
        _, data = self._request(
            "GET", f"/repos/{repo}/collaborators/{quote(username, safe='')}/permission"
        )
        return str(data.get("permission") or "none")

    # -- commit statuses and check runs --------------------------------------------------------

    def create_status(
        self,
        repo: str,
        sha: str,
        state: str,
        description: str,
        context: str,
        target_url: str | None = None,
    ) -> dict[str, Any]:
        body = {"state": state, "description": description, "context": context}
        if target_url:
            body["target_url"] = target_url
        _, data = self._request("POST", f"/repos/{repo}/statuses/{sha}", body=body)
        return data

    def create_check_run(self, repo: str, body: dict[str, Any]) -> dict[str, Any]:
        _, data = self._request("POST", f"/repos/{repo}/check-runs", body=body)
        return data

    def update_check_run(
        self, repo: str, check_run_id: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        _, data = self._request("PATCH", f"/repos/{repo}/check-runs/{check_run_id}", body=body)
        return data

    # -- comments, reviews, labels -------------------------------------------------------------

    def issue_comments(self, repo: str, number: int) -> Iterator[dict[str, Any]]:
        """Every comment of an issue or pull request, oldest first, page after page."""
        return self._paginate(f"/repos/{repo}/issues/{number}/comments")

    def create_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        _, data = self._request(
            "POST", f"/repos/{repo}/issues/{number}/comments", body={"body": body}
        )
        return data

    def update_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        _, data = self._request(
            "PATCH", f"/repos/{repo}/issues/comments/{comment_id}", body={"body": body}
        )
        return data

    def reviews(self, repo: str, number: int) -> Iterator[dict[str, Any]]:
        return self._paginate(f"/repos/{repo}/pulls/{number}/reviews")

    def create_review(
        self, repo: str, number: int, event: str, body: str, commit_id: str
    ) -> dict[str, Any]:
        payload = {"event": event, "body": body, "commit_id": commit_id}
        _, data = self._request("POST", f"/repos/{repo}/pulls/{number}/reviews", body=payload)
        return data

    def dismiss_review(self, repo: str, number: int, review_id: int, message: str) -> None:
        self._request(
            "PUT",
            f"/repos/{repo}/pulls/{number}/reviews/{review_id}/dismissals",
            body={"message": message, "event": "DISMISS"},
        )

    def create_label(self, repo: str, name: str, color: str, description: str) -> bool:
        """Create a repository label; False when it already exists (GitHub's 422
        `already_exists`: there is no cheaper way to ask with the endpoints the App uses)."""
        body = {"name": name, "color": color, "description": description}
        try:
            self._request("POST", f"/repos/{repo}/labels", body=body)
        except GitHubError as exc:
            if exc.status == 422 and exc.has_code("already_exists"):
                return False
            raise
        return True

    def add_labels(self, repo: str, number: int, names: list[str]) -> None:
        self._request("POST", f"/repos/{repo}/issues/{number}/labels", body={"labels": names})

    def remove_label(self, repo: str, number: int, name: str) -> None:
        """Remove a label from an issue or pull request; one already gone is not an error."""
        try:
            self._request("DELETE", f"/repos/{repo}/issues/{number}/labels/{quote(name, safe='')}")
        except GitHubError as exc:
            if exc.status != 404:
                raise

    # -- the App's webhook deliveries ----------------------------------------------------------

    def failed_deliveries(self, since: datetime) -> list[dict[str, Any]]:
        """Deliveries of the App's webhook since `since` that failed and were not redelivered
        successfully since (GitHub never retries a delivery by itself). Needs App credentials.
        """
        failed: dict[str, dict[str, Any]] = {}
        delivered: set[str] = set()
        for item in self._paginate("/app/hook/deliveries", as_app=True):
            at = datetime.fromisoformat(item["delivered_at"])
            if at < since:
                break  # newest first
            if 200 <= int(item.get("status_code") or 0) < 300:
                delivered.add(item["guid"])
            else:
                failed.setdefault(item["guid"], item)
        return [item for guid, item in failed.items() if guid not in delivered]

    def redeliver(self, delivery_id: int) -> None:
        self._request("POST", f"/app/hook/deliveries/{delivery_id}/attempts", as_app=True)

    def dispatch_workflow(
        self, repo: str, workflow: str, ref: str, inputs: dict[str, str]
    ) -> dict[str, Any]:
        """Start `workflow` on `ref`; GitHub answers with the run's id and URLs."""
        body = {"ref": ref, "inputs": inputs, "return_run_details": True}
        _, data = self._request(
            "POST", f"/repos/{repo}/actions/workflows/{workflow}/dispatches", body=body
        )
        return data or {}

    def workflow_run(self, repo: str, run_id: int) -> dict[str, Any]:
        _, data = self._request("GET", f"/repos/{repo}/actions/runs/{run_id}")
        return data

    def pulls_for_commit(self, repo: str, sha: str) -> list[dict[str, Any]]:
        """The open pull requests whose head holds `sha`, and the merged one that brought it
        into the default branch (not in the shared OpenAPI subset: a push needs it)."""
        return list(self._paginate(f"/repos/{repo}/commits/{sha}/pulls"))

    def statuses(self, repo: str, sha: str) -> list[dict[str, Any]]:
        """The commit's statuses, newest first (GitHub's order)."""
        return list(self._paginate(f"/repos/{repo}/commits/{sha}/statuses"))

    # -- plumbing ------------------------------------------------------------------------------

    def _request(
        self,
        verb: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        as_app: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        """One request (retried by `GithubRetry`), after the write budget for writes.

        A 401 for an installation token the cache still trusted (revoked, or the App was
        reinstalled) makes the credentials forget it, and the request goes once more with a
        new token.
        """
        if as_app:
            return self._send(self._app_github(), verb, path, params, body)
        token = self._credentials.token_for(self.installation_id)
        try:
            return self._send(self._github(token), verb, path, params, body)
        except GitHubError as exc:
            renewable = isinstance(self._credentials, AppCredentials)
            if exc.status != 401 or not renewable or self.installation_id is None:
                raise
            self._credentials.forget(self.installation_id, token)
        token = self._credentials.token_for(self.installation_id)
        return self._send(self._github(token), verb, path, params, body)

    def _send(
        self, github: Github, verb: str, path: str, params: dict[str, Any] | None, body: Any
    ) -> tuple[dict[str, Any], Any]:
        if verb != "GET":
            self._budget().acquire()
        with github_errors():
            headers, data = github.requester.requestJsonAndCheck(
                verb, path, parameters=params, headers={"Accept": MEDIA_TYPE}, input=body
            )
        metrics.github_rate_limit(headers)
        return headers, data

    def _paginate(
        self, path: str, params: dict[str, Any] | None = None, *, as_app: bool = False
    ) -> Iterator[dict[str, Any]]:
        url: str | None = path
        query: dict[str, Any] | None = {**(params or {}), "per_page": 100}
        while url is not None:
            headers, data = self._request("GET", url, params=query, as_app=as_app)
            yield from data
            found = _NEXT_LINK.search(headers.get("link", ""))
            url, query = (found.group(1), None) if found else (None, None)

    def _budget(self) -> WriteBudget:
        with self._shared.lock:
            budget = self._shared.budgets.get(self.installation_id)
            if budget is None:
                budget = WriteBudget(self._pacing.writes)
                self._shared.budgets[self.installation_id] = budget
            return budget

    def _github(self, token: str) -> Github:
        """The installation's `Github`, rebuilt when the credentials hand out a new token."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._shared.lock:
            known = self._shared.githubs.get(self.installation_id)
            if known is not None and known[0] == digest:
                return known[1]
            github = self._build(Auth.Token(token))
            self._shared.githubs[self.installation_id] = (digest, github)
            return github

    def _app_github(self) -> Github:
        if not isinstance(self._credentials, AppCredentials):
            raise TypeError("webhook deliveries belong to the App: App credentials are needed")
        return self._build(Auth.AppAuthToken(self._credentials.app_jwt()))

    def _build(self, auth: Auth.Auth) -> Github:
        return Github(
            auth=auth,
            base_url=self.api_url,
            retry=github_retry(self._retries),
            per_page=100,
            timeout=math.ceil(self._retries.timeout),  # PyGithub wants whole seconds
            user_agent=USER_AGENT,
            api_version=API_VERSION,
            seconds_between_requests=self._pacing.seconds_between_requests or None,
            seconds_between_writes=self._pacing.seconds_between_writes or None,
        )
