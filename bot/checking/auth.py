"""Credentials for the API under test, made the way its real clients get them.

`Credentials` is the one way to get them. It is built once per run from the policy's `auth`
and the run's variables, so a mistake in the configuration (a secret not passed, a `${NAME}`
nothing defines) is an error before anything runs. Its headers are asked for per suite and
per side: a login's token is issued by the API of that side (base or head), which runs on
its own database, and a token from one would mean nothing to the other.
"""

from __future__ import annotations

import string
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from jsonpath_ng.ext import parse as parse_jsonpath

from bot.policy.yamlfile import ConfigError
from bot.sandbox.environment import PASS_ENV

if TYPE_CHECKING:  # bot.policy.model imports bot.checking, whose runner imports this module
    from bot.policy.model import Auth, Login

# How much of the token endpoint's answer a failed login shows.
BODY_CHARS = 300


class LoginFailed(Exception):
    """The login gave no token. The message is the evidence: what was asked, what came back,
    never the credentials sent."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body


class Credentials:
    """The headers a step with `auth: true` sends, for whichever side's API it runs against."""

    def __init__(self, auth: Auth, source: str, variables: Mapping[str, str]):
        """`variables` are those a policy may name: the ones passed (GATEKEEPER_PASS_ENV)
        and the API's resolved `api.env`. Anything missing is a ConfigError naming the key."""
        self.auth = auth
        self._secret = ""
        self._login_body: Any = None
        self._token_path = None
        if auth.type in ("jwt", "bearer"):
            self._secret = variables.get(auth.secret_env or "", "")
            if not self._secret:
                raise ConfigError(
                    source,
                    [
                        f"{source}: auth.secret_env names ${auth.secret_env}, which is not "
                        f"passed: set it and name it in {PASS_ENV}"
                    ],
                )
        elif auth.login is not None:
            key, body = (
                ("form", auth.login.form)
                if auth.login.form is not None
                else ("json", auth.login.json_body)
            )
            self._login_body = _expand(body, variables, f"{source}: auth.login.{key}")
            self._token_path = parse_jsonpath(auth.login.token)  # checked by the policy model

    @property
    def login(self) -> Login | None:
        """The login request, when getting the headers asks the API."""
        return self.auth.login if self.auth.type == "login" else None

    def headers(self, api_url: str, client: httpx.Client) -> dict[str, str]:
        """The headers for the API at `api_url`, asked through `client` for a login.

        Raises LoginFailed when the login gives no token; the other types never ask the API.
        """
        if self.auth.type == "none":
            return {}
        if self.auth.type == "bearer":
            token = self._secret
        elif self.auth.type == "jwt":
            now = int(time.time())
            claims = {"iat": now, "nbf": now, "exp": now + self.auth.ttl_seconds}
            token = jwt.encode(
                {**claims, **self.auth.claims}, self._secret, algorithm=self.auth.algorithm
            )
        else:
            token = self._log_in(api_url, client)
        return {self.auth.header: self.auth.value.format(token=token)}

    def _log_in(self, api_url: str, client: httpx.Client) -> str:
        login = self.login
        assert login is not None  # type 'login' needs it (the policy model checks)
        request = f"{login.method} {login.path}"
        body = {"data": self._login_body} if login.form is not None else {"json": self._login_body}
        try:
            response = client.request(login.method, api_url.rstrip("/") + login.path, **body)
        except httpx.HTTPError as exc:
            raise LoginFailed(f"{request} failed: {_one_line(exc)}") from None
        status, text = response.status_code, _one_line(response.text, BODY_CHARS)
        head = f"{request} -> {status}"
        allowed = [login.status] if isinstance(login.status, int) else login.status
        if allowed is None and not 200 <= status < 300:
            raise LoginFailed(f"{head}, expected 2xx; body: {text}", status, text)
        if allowed is not None and status not in allowed:
            wanted = " or ".join(str(s) for s in allowed)
            raise LoginFailed(f"{head}, expected {wanted}; body: {text}", status, text)
        try:
            data = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "none")
            raise LoginFailed(
                f"{head}, but the response is not JSON (content-type: {kind}); body: {text}",
                status,
                text,
            ) from None
        assert self._token_path is not None
        found = [match.value for match in self._token_path.find(data)]
        token = found[0] if found else None
        # A token is text; a number is taken as its digits, anything else is no token.
        if isinstance(token, bool) or not isinstance(token, str | int | float) or token == "":
            what = "matched nothing" if not found else f"is {_one_line(repr(token), 60)}"
            raise LoginFailed(
                f"{head}, but {login.token} {what}, not a token; body: {text}", status, text
            )
        return str(token)


def _expand(value: Any, variables: Mapping[str, str], where: str) -> Any:
    """`${NAME}` in every string of a login body (not in keys), from `variables`."""
    if isinstance(value, dict):
        return {key: _expand(item, variables, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, variables, f"{where}.{i}") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        return string.Template(value).substitute(variables)
    except KeyError as exc:
        raise ConfigError(
            where,
            [
                f"{where} needs ${{{exc.args[0]}}}, which is neither in api.env nor passed: "
                f"set it and name it in {PASS_ENV}"
            ],
        ) from None
    except ValueError as exc:  # a lone `$`: write `$$` for a literal one
        raise ConfigError(where, [f"{where}: {exc}; write $$ for a literal $"]) from None


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split()) or type(text).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
