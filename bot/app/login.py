"""Who may read the run history: people signed in with GitHub, and API clients with a token.

Reports hold log tails and schema diffs of private repositories, so the dashboard and the run
API (`/`, `/runs...`, `/stats...`) are never open by default:

- **Sign in with GitHub** through the App's own OAuth (a user-to-server token, GitHub's web
  flow). The person then sees the runs of the repositories GitHub lists for them under the
  App's installations (`GET /user/installations`, then `GET /user/installations/{id}/
  repositories`): exactly those they can read and the App is installed on. The `state`
  parameter, kept in a short-lived cookie of its own, ties the callback to the browser that
  started the sign-in (CSRF).
- **A static token** (`GATEKEEPER_DASHBOARD_TOKEN`, sent as `Authorization: Bearer ...`) for
  API clients; it sees every run.
- Neither configured: the pages and the API answer 401 saying which settings open them.

The session is a sealed cookie (`bot.app.session`) and GitHub's end of the sign-in is
`bot.app.oauth`; here are the sign-in pages and the access checks. The repository list is
kept per session in the process for `session_refresh` seconds, then asked of GitHub again: a
person who loses access stops seeing the runs within minutes, not at the session's end. (It
is not in the cookie itself: a person who can read a few hundred repositories would outgrow
the 4 KB browsers keep.)
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from bot.app.oauth import GitHubOAuth, GitHubUnavailable, LoginError, TokenRejected
from bot.app.pages import templates
from bot.app.session import SESSION_COOKIE, STATE_COOKIE, Seal, session_key
from bot.app.settings import Settings

log = logging.getLogger("gatekeeper.login")

STATE_SECONDS = 600  # GitHub's authorization codes live 10 minutes too
_CACHED_SESSIONS = 10_000

CLOSED = (
    "The dashboard and the run API are closed: set GATEKEEPER_OAUTH_CLIENT_ID and "
    "GATEKEEPER_OAUTH_CLIENT_SECRET (the App's client id and secret) to sign in with GitHub, "
    "or GATEKEEPER_DASHBOARD_TOKEN for API clients."
)
NO_OAUTH = (
    "Sign-in with GitHub is not configured: set GATEKEEPER_OAUTH_CLIENT_ID and "
    "GATEKEEPER_OAUTH_CLIENT_SECRET. API clients send GATEKEEPER_DASHBOARD_TOKEN as a bearer "
    "token."
)


@dataclass(frozen=True)
class Viewer:
    """Who is asking. `repositories`: lower-case owner/name they may read; None for all."""

    login: str | None
    repositories: frozenset[str] | None

    def can_read(self, repository: str) -> bool:
        return self.repositories is None or repository.lower() in self.repositories


class Refused(Exception):
    """Raised by the access dependencies with the answer to give instead of the page: the
    sign-in redirect, a 401, a 503. webhook.create_app turns it into that response."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


async def answer_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return exc.response


# -- access ----------------------------------------------------------------------------------


class _Repositories:
    """Each session's repository list for `ttl` seconds, the least recently used dropped
    first past `size` sessions."""

    def __init__(self, ttl: float, size: int = _CACHED_SESSIONS):
        self.ttl = ttl
        self.size = size
        self._lock = threading.Lock()
        self._lists: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()

    def get(self, sid: str) -> frozenset[str] | None:
        with self._lock:
            found = self._lists.get(sid)
            if found is None or time.monotonic() - found[0] > self.ttl:
                return None
            self._lists.move_to_end(sid)
            return found[1]

    def put(self, sid: str, names: frozenset[str]) -> None:
        with self._lock:
            self._lists[sid] = (time.monotonic(), names)
            self._lists.move_to_end(sid)
            while len(self._lists) > self.size:
                self._lists.popitem(last=False)

    def drop(self, sid: str) -> None:
        with self._lock:
            self._lists.pop(sid, None)


class Access:
    """The app's access rules, from its settings. `page`, `api` and `report` are FastAPI
    dependencies: each returns the Viewer or raises Refused with the answer."""

    def __init__(self, settings: Settings):
        self.settings = settings
        token = settings.dashboard_token
        self._token = token.get_secret_value().encode() if token is not None else None
        oauth = settings.oauth_client_id and settings.oauth_client_secret
        self.github = GitHubOAuth(settings) if oauth else None
        self.seal = Seal(session_key(settings)) if oauth else None
        self.repositories = _Repositories(settings.session_refresh)
        self.secure = (settings.public_url or "").startswith("https://")

    @property
    def closed(self) -> bool:
        return self.github is None and self._token is None

    # -- dependencies

    def page(self, request: Request) -> Viewer:
        """A page: the anonymous are sent to the sign-in page, and back here after it."""
        return self._viewer(request, html=True)

    def api(self, request: Request) -> Viewer:
        """The JSON API: the anonymous get a 401 with a JSON error."""
        return self._viewer(request, html=False)

    def report(self, request: Request) -> Viewer:
        """`/runs/{id}/report`, linked from pull requests: a browser following the link is
        sent through the sign-in; anything else is treated as an API client."""
        return self._viewer(request, html="text/html" in request.headers.get("accept", ""))

    def _viewer(self, request: Request, *, html: bool) -> Viewer:
        if self.closed:
            raise Refused(_closed(html))
        authorization = request.headers.get("authorization")
        if authorization is not None:
            return self._bearer(authorization)
        session = self.session(request)
        if session is None:
            raise Refused(self._anonymous(request, html, clear=SESSION_COOKIE in request.cookies))
        try:
            names = self.repositories.get(session["sid"])
            if names is None:
                assert self.github is not None
                names = self.github.repositories(session["token"])
                self.repositories.put(session["sid"], names)
        except TokenRejected:
            self.repositories.drop(session["sid"])
            raise Refused(self._anonymous(request, html, clear=True)) from None
        except GitHubUnavailable as exc:
            log.warning("cannot refresh the repositories of %s: %s", session["login"], exc)
            raise Refused(
                _problem(
                    503,
                    "GitHub did not answer, so the repositories you may read are not known; "
                    "try again in a minute",
                    html,
                )
            ) from None
        return Viewer(login=session["login"], repositories=names)

    def _bearer(self, authorization: str) -> Viewer:
        scheme, _, given = authorization.partition(" ")
        if (
            self._token is not None
            and scheme.lower() == "bearer"
            # Bytes: compare_digest raises TypeError on a str holding non-ASCII.
            and hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)
        ):
            return Viewer(login=None, repositories=None)
        response = JSONResponse({"detail": "invalid bearer token"}, status_code=401)
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        raise Refused(response)

    def _anonymous(self, request: Request, html: bool, *, clear: bool) -> Response:
        response: Response
        if html:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(
                "/login?" + urlencode({"next": safe_next(target)}), status_code=303
            )
        else:
            how = (
                "sign in at /login, or send GATEKEEPER_DASHBOARD_TOKEN as a bearer token"
                if self.github is not None
                else "send GATEKEEPER_DASHBOARD_TOKEN as a bearer token"
            )
            response = JSONResponse({"detail": f"authentication required: {how}"}, 401)
            response.headers["WWW-Authenticate"] = "Bearer"
        if clear:
            response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- the session

    def session(self, request: Request) -> dict[str, Any] | None:
        """The session cookie's data (sid, login, token), or None."""
        if self.seal is None:
            return None
        data = self.seal.open("session", request.cookies.get(SESSION_COOKIE))
        if data is None or not all(isinstance(data.get(k), str) for k in ("sid", "login", "token")):
            return None
        return data

    def viewer_of(self, request: Request) -> str | None:
        """The signed-in login, if any, for pages that are open (the sign-in page)."""
        session = self.session(request)
        return session["login"] if session else None

    def cookie(self, response: Response, name: str, value: str, seconds: float, path: str) -> None:
        response.set_cookie(
            name,
            value,
            max_age=int(seconds),
            path=path,
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site (`//evil`,
    `/\\evil` and `https://...` all become `/`)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or len(target) > 2000
        or any(ord(c) < 0x20 for c in target)
    ):
        return "/"
    return target


def _problem(status: int, message: str, html: bool) -> Response:
    if html:
        return _render("login.html", status, user=None, message=message, sign_in=None)
    return JSONResponse({"detail": message}, status_code=status)


def _closed(html: bool) -> Response:
    response = _problem(401, CLOSED, html)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("nav", None)
    return HTMLResponse(templates.get_template(template).render(**context), status_code=status)


# -- the sign-in pages -----------------------------------------------------------------------


def router(access: Access) -> APIRouter:
    """/login (the page), /login/github (off to GitHub), /login/callback (back from it) and
    /logout. Open to everyone: they are how one gets in."""
    api = APIRouter()
    settings = access.settings

    def base_url(request: Request) -> str:
        return (settings.public_url or str(request.base_url)).rstrip("/")

    @api.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> HTMLResponse:
        target = safe_next(request.query_params.get("next"))
        if access.closed:
            return _render("login.html", 401, user=None, message=CLOSED, sign_in=None)
        sign_in = "/login/github?" + urlencode({"next": target}) if access.github else None
        return _render(
            "login.html",
            user=access.viewer_of(request),
            message=None if access.github else NO_OAUTH,
            sign_in=sign_in,
        )

    @api.get("/login/github")
    def start(request: Request) -> Response:
        if access.github is None or access.seal is None:
            return _render("login.html", 404, user=None, message=NO_OAUTH, sign_in=None)
        state = secrets.token_urlsafe(24)
        target = safe_next(request.query_params.get("next"))
        redirect_uri = f"{base_url(request)}/login/callback"
        response = RedirectResponse(access.github.authorize_url(state, redirect_uri), 302)
        sealed = access.seal.close("oauth-state", {"state": state, "next": target}, STATE_SECONDS)
        access.cookie(response, STATE_COOKIE, sealed, STATE_SECONDS, "/login")
        return response

    @api.get("/login/callback")
    def callback(request: Request) -> Response:
        if access.github is None or access.seal is None:
            return _render("login.html", 404, user=None, message=NO_OAUTH, sign_in=None)
        params = request.query_params
        pending = access.seal.open("oauth-state", request.cookies.get(STATE_COOKIE))
        again = "/login/github?" + urlencode({"next": (pending or {}).get("next", "/")})

        def refuse(status: int, message: str) -> HTMLResponse:
            response = _render("login.html", status, user=None, message=message, sign_in=again)
            response.delete_cookie(STATE_COOKIE, path="/login")
            return response

        if "error" in params:  # the person declined, or GitHub refused the request
            reason = params.get("error_description") or params["error"]
            return refuse(403, f"GitHub did not sign you in: {reason[:200]}")
        state, code = params.get("state", ""), params.get("code", "")
        # The CSRF check: the state GitHub sends back must be the one this browser was given.
        if pending is None or not hmac.compare_digest(
            state.encode("utf-8", "replace"), str(pending.get("state", "")).encode()
        ):
            return refuse(
                400,
                "This sign-in was not started from this browser, or took longer than 10 "
                "minutes. Sign in again.",
            )
        if not code or len(code) > 512:
            return refuse(400, "GitHub sent no authorization code. Sign in again.")
        try:
            token, expires = access.github.exchange(code, f"{base_url(request)}/login/callback")
            login = access.github.login(token)
            names = access.github.repositories(token)
        except LoginError as exc:
            return refuse(400, str(exc))
        except (GitHubUnavailable, TokenRejected) as exc:
            log.warning("sign-in failed: %s", exc)
            return refuse(502, f"GitHub did not complete the sign-in ({exc}). Try again.")
        lifetime = settings.session_hours * 3600
        if expires is not None:
            lifetime = min(lifetime, expires)
        sid = secrets.token_urlsafe(18)
        access.repositories.put(sid, names)
        session = access.seal.close(
            "session", {"sid": sid, "login": login, "token": token}, lifetime
        )
        response = RedirectResponse(safe_next(str(pending.get("next"))), status_code=303)
        access.cookie(response, SESSION_COOKIE, session, lifetime, "/")
        response.delete_cookie(STATE_COOKIE, path="/login")
        log.info("%s signed in: %d repositories readable", login, len(names))
        return response

    @api.post("/logout")
    def logout(request: Request) -> Response:
        session = access.session(request)
        if session is not None:
            access.repositories.drop(session["sid"])
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return api
