"""GitHub's end of the sign-in: the App's OAuth web flow (the authorize URL, the code
exchanged for a user-to-server token) and the two reads made with that token, the user's login
and the repositories they can read under the App's installations (`GET /user/installations`,
then `GET /user/installations/{id}/repositories`). `bot.app.login` drives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bot.app import metrics
from bot.app.settings import Settings

MAX_PAGES = 50  # 5,000 installations or repositories at 100 a page


class LoginError(Exception):
    """GitHub refused the sign-in (a bad or used code, wrong client credentials); the message
    is for the person signing in."""


class TokenRejected(Exception):
    """GitHub answered 401 to the user's token: revoked, expired, or the App uninstalled."""


class GitHubUnavailable(Exception):
    """GitHub did not answer, or answered 5xx/429."""


class GitHubOAuth:
    """The web flow and the two user-token reads, over httpx. Every request is counted like
    the App's own (`gatekeeper_github_api_calls_total`)."""

    def __init__(self, settings: Settings, timeout: float = 10.0):
        assert settings.oauth_client_id and settings.oauth_client_secret
        self.client_id = settings.oauth_client_id
        self._client_secret = settings.oauth_client_secret.get_secret_value()
        self.web_url = settings.web_url.rstrip("/")
        self.api_url = settings.github_api_url.rstrip("/")
        self.timeout = timeout

    def authorize_url(self, state: str, redirect_uri: str) -> str:
        query = urlencode(
            {"client_id": self.client_id, "redirect_uri": redirect_uri, "state": state}
        )
        return f"{self.web_url}/login/oauth/authorize?{query}"

    def exchange(self, code: str, redirect_uri: str) -> tuple[str, float | None]:
        """The user's token for `code`, and seconds until it expires (None: it does not)."""
        answer = self._send(
            "POST",
            f"{self.web_url}/login/oauth/access_token",
            data={
                "client_id": self.client_id,
                "client_secret": self._client_secret,
                "code": code,
                "redirect_uri": redirect_uri,
            },
            headers={"Accept": "application/json"},
        )
        if answer.status_code >= 500 or answer.status_code == 429:
            raise GitHubUnavailable(f"GitHub answered {answer.status_code}")
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise LoginError(f"GitHub answered {answer.status_code} without a token")
        if "error" in body or not isinstance(body.get("access_token"), str):
            # GitHub answers 200 with an error: bad_verification_code (expired or used),
            # incorrect_client_credentials, redirect_uri_mismatch.
            reason = body.get("error_description") or body.get("error") or "no token"
            raise LoginError(f"GitHub refused the sign-in: {reason}")
        expires = body.get("expires_in")
        return body["access_token"], float(expires) if isinstance(expires, int | float) else None

    def login(self, token: str) -> str:
        user = _json(self._api(token, "/user"))
        if not isinstance(user, dict) or not isinstance(user.get("login"), str):
            raise GitHubUnavailable("GitHub's /user answer has no login")
        return user["login"]

    def repositories(self, token: str) -> frozenset[str]:
        """Lower-case owner/name of every repository the token's user can read in the App's
        installations."""
        names: set[str] = set()
        for installation in self._pages(token, "/user/installations", "installations"):
            installation_id = installation.get("id")
            if not isinstance(installation_id, int):
                continue
            path = f"/user/installations/{installation_id}/repositories"
            for repo in self._pages(token, path, "repositories"):
                permissions = repo.get("permissions") or {}
                if isinstance(repo.get("full_name"), str) and permissions.get("pull", True):
                    names.add(repo["full_name"].lower())
        return frozenset(names)

    def _pages(self, token: str, path: str, key: str) -> Iterator[dict[str, Any]]:
        url: str | None = f"{self.api_url}{path}?per_page=100"
        for _ in range(MAX_PAGES):
            if url is None:
                return
            answer = self._api(token, url)
            body = _json(answer)
            items = body.get(key) if isinstance(body, dict) else None
            yield from (item for item in items or [] if isinstance(item, dict))
            url = answer.links.get("next", {}).get("url")
            if url is not None and not url.startswith(f"{self.api_url}/"):
                # The token goes to GitHub's API and nowhere else, whatever a Link says.
                raise GitHubUnavailable(f"GitHub's next page is elsewhere: {url[:100]}")

    def _api(self, token: str, path_or_url: str) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else f"{self.api_url}{path_or_url}"
        answer = self._send(
            "GET",
            url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        if answer.status_code == 401:
            raise TokenRejected("GitHub no longer accepts the token")
        if answer.status_code >= 400:
            raise GitHubUnavailable(f"GitHub answered {answer.status_code} to {urlsplit(url).path}")
        return answer

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {"User-Agent": "gatekeeper", **kwargs.pop("headers", {})}
        try:
            answer = httpx.request(
                method, url, headers=headers, timeout=self.timeout, trust_env=False, **kwargs
            )
        except httpx.HTTPError as exc:
            metrics.github_call(method, None)
            raise GitHubUnavailable(f"GitHub did not answer: {type(exc).__name__}") from None
        metrics.github_call(method, answer.status_code)
        metrics.github_rate_limit(answer.headers)
        return answer


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:  # a proxy's error page, a truncated answer
        raise GitHubUnavailable(f"GitHub answered {answer.status_code} without JSON") from None
