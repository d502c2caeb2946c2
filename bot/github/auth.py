"""Who the bot is on GitHub: a GitHub App (JWT, then installation tokens) or a personal token.

Secrets (the private key, JWTs, tokens) never appear in a log line, an exception message or a
repr: the classes mask them, the token exchange goes through `requests` (whose logs carry no
bodies; PyGithub's debug log would print the response that holds the token), and errors carry
GitHub's message only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

import jwt
import requests
from requests.adapters import HTTPAdapter

from bot.app import metrics
from bot.github.http import (
    API_VERSION,
    DEFAULT_RETRIES,
    MEDIA_TYPE,
    USER_AGENT,
    GitHubError,
    Retries,
    from_response,
    github_errors,
    github_retry,
)

DEFAULT_API_URL = "https://api.github.com"
KEY_ENV = "GATEKEEPER_APP_PRIVATE_KEY"
KEY_FILE_ENV = "GATEKEEPER_APP_PRIVATE_KEY_FILE"
# GitHub refuses App JWTs that live longer than 10 minutes; its clock may also run behind ours.
JWT_BACKDATE = 60
JWT_LIFETIME = 9 * 60
# An installation token lives an hour; a run must not start with one about to expire.
REFRESH_MARGIN = 5 * 60
MASK = "***"


class CredentialsError(ValueError):
    """The App's credentials are missing or unusable; the message says which and how to fix."""


class Credentials(Protocol):
    def token_for(self, installation_id: int | None) -> str:
        """A token for API calls and clones on behalf of `installation_id`."""
        ...


class TokenCredentials:
    """A personal access token, for local use: the same token whatever the installation."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise CredentialsError("the GitHub token is empty")
        self.__token = token.strip()

    def token_for(self, installation_id: int | None) -> str:
        return self.__token

    def __repr__(self) -> str:
        return f"TokenCredentials(token={MASK})"


class AppCredentials:
    """A GitHub App: signs JWTs with its private key and exchanges them for installation tokens,
    cached per installation and renewed `refresh_margin` seconds before they expire.

    Thread-safe: one lock per installation, so two runs of one installation never mint two
    tokens at once, and a slow exchange for one installation does not hold up the others.
    """

    def __init__(
        self,
        app_id: int,
        private_key: str,
        *,
        api_url: str = DEFAULT_API_URL,
        retries: Retries = DEFAULT_RETRIES,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self.app_id = app_id
        self.api_url = api_url.rstrip("/")
        self.__key = _usable_key(private_key)
        self._retries = retries
        self._refresh_margin = refresh_margin
        self._tokens: dict[int, tuple[str, float]] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._session = requests.Session()
        self._session.mount(self.api_url, HTTPAdapter(max_retries=github_retry(retries)))

    @classmethod
    def from_env(
        cls,
        app_id: int,
        *,
        env: Mapping[str, str] | None = None,
        api_url: str = DEFAULT_API_URL,
        retries: Retries = DEFAULT_RETRIES,
    ) -> AppCredentials:
        """The App's credentials with the key from `GATEKEEPER_APP_PRIVATE_KEY` (the PEM text)
        or `GATEKEEPER_APP_PRIVATE_KEY_FILE` (a path to it)."""
        key = private_key_from_env(os.environ if env is None else env)
        return cls(app_id, key, api_url=api_url, retries=retries)

    def app_jwt(self) -> str:
        """A JWT that authenticates as the App itself (RS256, valid for 9 minutes)."""
        now = int(time.time())
        claims = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": str(self.app_id)}
        return jwt.encode(claims, self.__key, algorithm="RS256")

    def installation_token(self, installation_id: int) -> str:
        with self._lock_for(installation_id):
            cached = self._tokens.get(installation_id)
            if cached is not None and time.time() < cached[1] - self._refresh_margin:
                return cached[0]
            token, expires_at = self._create_token(installation_id)
            self._tokens[installation_id] = (token, expires_at)
            return token

    def forget(self, installation_id: int, token: str) -> None:
        """Drop a cached token GitHub refused, unless another thread replaced it already."""
        with self._lock_for(installation_id):
            cached = self._tokens.get(installation_id)
            if cached is not None and cached[0] == token:
                del self._tokens[installation_id]

    def token_for(self, installation_id: int | None) -> str:
        if installation_id is None:
            raise CredentialsError(
                "a GitHub App acts on a repository through its installation: "
                "no installation id was given"
            )
        return self.installation_token(installation_id)

    def _lock_for(self, installation_id: int) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(installation_id, threading.Lock())

    def _create_token(self, installation_id: int) -> tuple[str, float]:
        url = f"{self.api_url}/app/installations/{installation_id}/access_tokens"
        headers = {
            "Authorization": f"Bearer {self.app_jwt()}",
            "Accept": MEDIA_TYPE,
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }
        with github_errors():
            response = self._session.post(url, headers=headers, timeout=self._retries.timeout)
        metrics.github_rate_limit(response.headers)
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if not response.ok:
            raise from_response(response.status_code, data)
        if not isinstance(data, dict) or not data.get("token"):
            raise GitHubError(response.status_code, "the answer held no installation token")
        try:
            expires_at = datetime.fromisoformat(data["expires_at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            raise GitHubError(
                response.status_code, "the installation token came without a valid expires_at"
            ) from None
        return str(data["token"]), expires_at

    def __repr__(self) -> str:
        return f"AppCredentials(app_id={self.app_id}, private_key={MASK}, api_url={self.api_url!r})"


def private_key_from_env(env: Mapping[str, str]) -> str:
    """The App's PEM private key from the environment, with an error that says what to set."""
    text, path = env.get(KEY_ENV, "").strip(), env.get(KEY_FILE_ENV, "").strip()
    if text and path:
        raise CredentialsError(f"both {KEY_ENV} and {KEY_FILE_ENV} are set: keep one")
    if path:
        return read_private_key(Path(path), source=KEY_FILE_ENV)
    if text:
        # Environment files often hold the PEM on one line with literal "\n" escapes.
        return text.replace("\\n", "\n")
    raise CredentialsError(
        f"the GitHub App's private key is missing: set {KEY_ENV} to the PEM text "
        f"or {KEY_FILE_ENV} to the path of the .pem file GitHub gave you"
    )


def read_private_key(path: Path, source: str = "the private key file") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"{source}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{source}: cannot read {path}: {type(exc).__name__}") from None


def _usable_key(private_key: str) -> str:
    """The key, once it has signed a JWT: a bad key fails here, at start-up, not mid-run.

    The error names the problem only; the library's message is dropped in case it quotes
    the key.
    """
    key = private_key.strip()
    if "PRIVATE KEY-----" not in key:
        raise CredentialsError(
            "the GitHub App's private key is not PEM text "
            "(expected '-----BEGIN RSA PRIVATE KEY-----' or '-----BEGIN PRIVATE KEY-----')"
        )
    try:
        jwt.encode({"iss": "check"}, key, algorithm="RS256")
    except Exception as exc:
        problem = type(exc).__name__
    else:
        return key
    raise CredentialsError(f"the GitHub App's private key cannot sign an RS256 JWT ({problem})")
