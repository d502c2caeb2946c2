"""A fake GitHub on loopback: a FastAPI app served by uvicorn in a background thread.

Why a real HTTP server and not mocks: the bot talks to GitHub through PyGithub, httpx and the
git command line, and each has its own way to build URLs, send bodies, authenticate, page and
retry. Only a server that speaks HTTP exercises all of that. Why GitHub's OpenAPI description:
a fake written from memory accepts what the real API refuses; this one routes and validates
every request against GitHub's own description (tests/github/openapi.py), applies GitHub's
documented limits (fake_api.github_rules), and records each refusal in ``violations`` so a test
fails on a request the real API would refuse, even when the bot swallowed the error.

Every API request goes through one pipeline (``FakeGitHub._api``):
record -> route -> validate (spec + limits) -> injected delay/fault -> authenticate ->
422 if invalid -> rate limit -> handler (fake_api.py) -> validate the answer -> rate headers.

Usage::

    with FakeGitHub() as fake:
        fake.add_repo("octo/demo", path_to_git_repo)
        fake.add_pull("octo/demo", 1, base="main", head="builder/x")
        token = fake.issue_token()
        ...  # point the bot at fake.url
        assert fake.violations == []
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .fake_api import (
    AUTH,
    HANDLERS,
    ApiError,
    AppSettings,
    Call,
    Principal,
    Reply,
    github_rules,
    iso,
    rate_numbers,
    sync_pull,
)
from .fake_state import (
    CheckRun,
    Delivery,
    FakeState,
    Installation,
    Issue,
    LocalGit,
    OAuthCode,
    Pull,
    RecordedRequest,
    Repo,
    Token,
    UserToken,
    Violation,
    WorkflowRun,
)
from .git_http import GitProjectRoot, run_http_backend
from .openapi import GitHubSpec, RouteMiss, SpecRequest, SpecResponse, github_spec

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)
JWT_MAX_LIFETIME_SECONDS = 600


@dataclass
class Fault:
    """An injected answer for the next ``times`` calls of ``operation_id`` (``*``: any)."""

    operation_id: str
    times: int
    status: int
    message: str
    headers: dict[str, str]
    rate_limited: bool = False


@dataclass
class Delay:
    """Sleep before answering ``operation_id`` (``times`` None: every call)."""

    operation_id: str
    seconds: float
    times: int | None


class FakeGitHub:
    """GitHub's REST API (the operations of the shared OpenAPI subset) and git smart HTTP.

    Attributes tests use: ``url`` (base URL for PyGithub/httpx; also the git remote host,
    and github.com's sign-in pages), ``app_id`` and ``app_private_key`` (PEM) to sign App JWTs,
    ``oauth_client_id`` / ``oauth_client_secret`` for the App's OAuth, ``installation_id``,
    ``requests`` / ``violations`` / ``response_violations`` (records), ``state`` (everything).
    """

    def __init__(
        self,
        *,
        app_id: int = 424242,
        app_slug: str = "gatekeeper",
        owner: str = "octo",
        installation_id: int = 777,
        token_lifetime: float = 3600.0,
        spec: GitHubSpec | None = None,
    ) -> None:
        self.spec = spec or github_spec()
        self.state = FakeState()
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.app_private_key: str = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.settings = AppSettings(
            app_id=app_id,
            slug=app_slug,
            name=app_slug.capitalize(),
            owner=owner,
            client_id=f"Iv23fake{app_id}",
            client_secret=secrets.token_hex(20),
            public_key_pem=private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            token_lifetime=token_lifetime,
        )
        self.installation_id = installation_id
        self.state.installations[installation_id] = Installation(installation_id, owner)
        self._faults: list[Fault] = []
        self._delays: list[Delay] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-github-")
        self._git_root = GitProjectRoot(Path(self._tmp.name) / "git")
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        """Serve on a free 127.0.0.1 port; returns once the server accepts connections."""
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose protocol says
        # TCP, and without it every answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False, ws="none"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-github", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake GitHub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = self._thread = None
        self._tmp.cleanup()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what the test reads -----------------------------------------------------------------

    @property
    def app_id(self) -> int:
        return self.settings.app_id

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.state.requests

    @property
    def violations(self) -> list[Violation]:
        """Requests GitHub would refuse (spec or documented limit); must end up empty."""
        return self.state.violations

    @property
    def response_violations(self) -> list[Violation]:
        """Answers of the fake that depart from GitHub's description (bugs of the fake)."""
        return self.state.response_violations

    @property
    def tokens_issued(self) -> int:
        """Installation tokens created through ``POST /app/installations/{id}/access_tokens``."""
        return self.state.tokens_issued

    @property
    def token_lifetime(self) -> float:
        return self.settings.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: float) -> None:
        """Lifetime of tokens issued from now on (short ones force clients to refresh)."""
        self.settings.token_lifetime = seconds

    @property
    def redelivery_attempts(self) -> list[int]:
        """Delivery ids passed to ``POST /app/hook/deliveries/{id}/attempts``, in order."""
        return self.state.redelivery_attempts

    @property
    def oauth_client_id(self) -> str:
        """The App's client id, for its OAuth web flow (``GATEKEEPER_OAUTH_CLIENT_ID``)."""
        return self.settings.client_id

    @property
    def oauth_client_secret(self) -> str:
        return self.settings.client_secret

    def calls(self, operation_id: str) -> list[RecordedRequest]:
        """Recorded requests of one operation (``.body``, ``.path``, ``.path_params``...)."""
        with self.state.lock:
            return [r for r in self.state.requests if r.operation_id == operation_id]

    def bodies(self, operation_id: str) -> list[Any]:
        """Just the JSON bodies sent to one operation, in order."""
        return [r.body for r in self.calls(operation_id)]

    def statuses(self, repo: str, ref: str) -> list[dict[str, Any]]:
        """Commit statuses of ``ref`` in creation order."""
        with self.state.lock:
            stored = self._repo(repo)
            sha = stored.git.resolve(ref) or ref
            return list(stored.statuses.get(sha, []))

    def check_run(self, run_id: int) -> CheckRun:
        """A check run with all its annotations (GitHub's annotations endpoint is not faked)."""
        return self.state.check_runs[run_id]

    def check_runs(self, repo: str) -> list[CheckRun]:
        with self.state.lock:
            return [self.state.check_runs[i] for i in self._repo(repo).check_run_ids]

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        with self.state.lock:
            issue = self._repo(repo).issues[number]
            return [self.state.comments[i] for i in issue.comment_ids]

    def labels(self, repo: str, number: int) -> list[str]:
        with self.state.lock:
            return list(self._repo(repo).issues[number].labels)

    def reviews(self, repo: str, number: int) -> list[dict[str, Any]]:
        with self.state.lock:
            pull = self._repo(repo).pulls[number]
            return [self.state.reviews[i] for i in pull.review_ids]

    def assert_no_violations(self) -> None:
        """Fail with every offending request listed (used by the ``fake_github`` fixture)."""
        problems = [f"request GitHub would refuse: {v}" for v in self.violations]
        problems += [
            f"fake answer not matching GitHub's description: {v}" for v in self.response_violations
        ]
        assert not problems, "\n".join(problems)

    @contextlib.contextmanager
    def expect_violation(
        self, operation_id: str | None = None, *, count: int = 1
    ) -> Iterator[list[Violation]]:
        """Assert the block makes exactly ``count`` violations (of ``operation_id``), then
        forget them, so a test of a refusal does not trip the fixture's final check."""
        before = len(self.state.violations)
        seen: list[Violation] = []
        yield seen
        with self.state.lock:
            new = self.state.violations[before:]
            seen.extend(new)
            wrong = [v for v in new if operation_id is not None and v.operation_id != operation_id]
            assert len(new) == count and not wrong, (
                f"expected {count} violation(s) of {operation_id or 'any operation'}, got: "
                + ("; ".join(map(str, new)) or "none")
            )
            del self.state.violations[before:]

    # -- what the test sets up ---------------------------------------------------------------

    def add_installation(
        self, installation_id: int, account: str, repositories: set[str] | None = None
    ) -> Installation:
        """Another installation (``repositories`` full names; None: all it is given)."""
        with self.state.lock:
            installation = Installation(installation_id, account, repositories)
            self.state.installations[installation_id] = installation
            return installation

    def add_repo(
        self,
        full_name: str,
        path: Path | str,
        *,
        default_branch: str = "main",
        private: bool = True,
        installation_id: int | None = None,
        owner_type: str = "Organization",
    ) -> Repo:
        """Serve the local git repository at ``path`` as ``full_name`` (API and git HTTP)."""
        git = LocalGit(Path(path))
        if git.resolve(f"refs/heads/{default_branch}") is None:
            raise ValueError(f"{path} has no branch {default_branch!r}")
        with self.state.lock:
            repo = Repo(
                full_name=full_name,
                id=self.state.next_id(),
                git=git,
                default_branch=default_branch,
                private=private,
                installation_id=installation_id or self.installation_id,
                owner_type=owner_type,
            )
            self.state.repos[full_name] = repo
            self._git_root.link(full_name, git.git_dir)
            return repo

    def add_pull(
        self,
        repo: str,
        number: int,
        *,
        base: str = "main",
        head: str,
        head_repo: str | None = None,
        user: str = "builder-bot",
        title: str | None = None,
        body: str | None = None,
        draft: bool = False,
    ) -> Pull:
        """Open pull request ``number`` from ``head_repo:head`` into ``repo:base``.

        Shas come from git (and follow the branches later); refs/pull/N/head and, when the
        branches merge cleanly, refs/pull/N/merge are created in ``repo`` like GitHub does.
        """
        with self.state.lock:
            stored = self._repo(repo)
            if head_repo is not None:
                self._repo(head_repo)
            pull = Pull(
                number=number,
                id=self.state.next_id(),
                base=base,
                head=head,
                head_repo=head_repo or stored.full_name,
                user=user,
                title=title or f"Pull request {number}",
                body=body,
                draft=draft,
            )
            stored.pulls[number] = pull
            stored.issues[number] = Issue(number, pull.title, user)
            try:
                sync_pull(self.state, stored, pull)
            except ApiError as error:
                raise ValueError(error.message) from None
            return pull

    def close_pull(self, repo: str, number: int, *, merged: bool = False) -> Pull:
        """Close (or merge) a pull: its shas stop following the branches, as on GitHub."""
        with self.state.lock:
            pull = self._repo(repo).pulls[number]
            pull.state, pull.merged = "closed", merged
            pull.closed_at = pull.updated_at = time.time()
            return pull

    def add_issue(self, repo: str, number: int, *, title: str = "", user: str = "octocat") -> Issue:
        with self.state.lock:
            issue = Issue(number, title or f"Issue {number}", user)
            self._repo(repo).issues[number] = issue
            return issue

    def set_permission(self, repo: str, username: str, role: str) -> None:
        """``role``: admin, maintain, write, triage, read or none (default for others: read)."""
        if role not in {"admin", "maintain", "write", "triage", "read", "none"}:
            raise ValueError(f"unknown role {role!r}")
        with self.state.lock:
            self._repo(repo).permissions[username.lower()] = role

    # -- signing in with GitHub (the App's OAuth web flow) ------------------------------------

    def sign_in_as(self, login: str | None, *, approve: bool = True) -> None:
        """Who is signed in to the fake's github.com: ``/login/oauth/authorize`` sends them
        back to the App with a code for ``login`` (``approve=False``: they click Cancel, and
        GitHub sends ``error=access_denied``). None: nobody, the page answers 401."""
        self.settings.oauth_user = login
        self.settings.oauth_approves = approve

    def set_oauth_callback(self, url: str | None) -> None:
        """The App's registered callback URL: a ``redirect_uri`` outside it is refused, as
        GitHub does (None: any is taken)."""
        self.settings.callback_url = url

    def revoke_user_tokens(self, login: str | None = None) -> None:
        """Revoke the user-to-server tokens of ``login`` (None: everyone's); GitHub then
        answers 401 to them, as after the user revokes the App's authorization."""
        with self.state.lock:
            for value, token in list(self.state.user_tokens.items()):
                if login is None or token.login.lower() == login.lower():
                    del self.state.user_tokens[value]

    def add_delivery(
        self,
        *,
        event: str,
        action: str | None = None,
        status_code: int = 200,
        guid: str | None = None,
        delivered_at: str | None = None,
        redelivery: bool = False,
        payload: dict[str, Any] | None = None,
        repository: str | None = None,
        delivery_id: int | None = None,
    ) -> Delivery:
        """A past delivery of the App's webhook (``status`` derives from ``status_code``)."""
        with self.state.lock:
            repository_id = self._repo(repository).id if repository else None
            delivery = Delivery(
                id=delivery_id or self.state.next_id(),
                guid=guid or str(uuid.uuid4()),
                event=event,
                action=action,
                status_code=status_code,
                status="OK"
                if 200 <= status_code < 300
                else f"Invalid HTTP Response: {status_code}",
                delivered_at=delivered_at or iso(time.time()),
                redelivery=redelivery,
                installation_id=self.installation_id,
                repository_id=repository_id,
                payload=payload,
            )
            self.state.deliveries.append(delivery)
            return delivery

    def set_redelivery_result(self, status_code: int) -> None:
        """What the App's endpoint answers to redeliveries from now on (default 200)."""
        self.settings.redelivery_status_code = status_code

    def add_workflow_run(
        self,
        repo: str,
        *,
        workflow_id: str = "gate.yml",
        head_branch: str | None = None,
        status: str = "completed",
        conclusion: str | None = "success",
        event: str = "push",
    ) -> WorkflowRun:
        with self.state.lock:
            stored = self._repo(repo)
            branch = head_branch or stored.default_branch
            sha = stored.git.resolve(f"refs/heads/{branch}")
            if sha is None:
                raise ValueError(f"{repo} has no branch {branch!r}")
            run = WorkflowRun(
                id=self.state.next_id(),
                repo=stored.full_name,
                workflow_id=workflow_id,
                head_branch=branch,
                head_sha=sha,
                status=status,
                conclusion=conclusion,
                event=event,
                run_number=len(stored.workflow_run_ids) + 1,
            )
            self.state.workflow_runs[run.id] = run
            stored.workflow_run_ids.append(run.id)
            return run

    def set_workflow_run(
        self, run_id: int, *, status: str | None = None, conclusion: str | None = None
    ) -> None:
        """Move a run along (queued -> in_progress -> completed) as Actions would."""
        with self.state.lock:
            run = self.state.workflow_runs[run_id]
            if status is not None:
                run.status = status
            if conclusion is not None:
                run.conclusion = conclusion
                run.status = "completed"
            run.updated_at = time.time()

    def workflow_runs(self, repo: str) -> list[WorkflowRun]:
        with self.state.lock:
            return [self.state.workflow_runs[i] for i in self._repo(repo).workflow_run_ids]

    # -- credentials -------------------------------------------------------------------------

    def app_jwt(
        self,
        *,
        issued_at_offset: int = -60,
        expires_in: int = 540,
        issuer: str | int | None = None,
        private_key: str | None = None,
    ) -> str:
        """An App JWT like PyGithub makes (iat 60 s in the past); arguments make bad ones."""
        now = int(time.time())
        claims = {
            "iat": now + issued_at_offset,
            "exp": now + issued_at_offset + expires_in,
            "iss": str(self.app_id) if issuer is None else issuer,
        }
        return jwt.encode(claims, private_key or self.app_private_key, algorithm="RS256")

    def issue_token(
        self,
        installation_id: int | None = None,
        *,
        lifetime: float | None = None,
        repositories: set[str] | None = None,
    ) -> str:
        """An installation token without the JWT round trip (not counted in tokens_issued)."""
        with self.state.lock:
            installation = self.state.installations[installation_id or self.installation_id]
            value = f"ghs_test{uuid.uuid4().hex}"
            expires = time.time() + (lifetime if lifetime is not None else self.token_lifetime)
            self.state.tokens[value] = Token(
                value, installation.id, expires, repositories, dict(installation.permissions)
            )
            return value

    def expire_tokens(self) -> None:
        """Make every installation token expired now (the next use answers 401)."""
        with self.state.lock:
            for token in self.state.tokens.values():
                token.expires_at = min(token.expires_at, time.time() - 1)

    def clone_url(self, repo: str, token: str | None = None) -> str:
        """``http://x-access-token:<token>@127.0.0.1:PORT/owner/repo.git`` (as GitHub's)."""
        host = self.url.removeprefix("http://")
        auth = f"x-access-token:{token}@" if token else ""
        return f"http://{auth}{host}/{repo}.git"

    # -- failure injection -------------------------------------------------------------------

    def fail_next(
        self, operation_id: str, status: int = 502, times: int = 1, message: str | None = None
    ) -> None:
        """The next ``times`` calls of ``operation_id`` (``*``: any) answer ``status``."""
        default = {500: "Server Error", 502: "Server Error", 503: "Service Unavailable"}
        self._faults.append(
            Fault(operation_id, times, status, message or default.get(status, "Error"), {})
        )

    def rate_limit_next(
        self,
        operation_id: str,
        retry_after: int = 1,
        secondary: bool = True,
        status: int = 403,
        times: int = 1,
    ) -> None:
        """Rate-limit the next calls the way GitHub does.

        Secondary: ``status`` (403 or 429) with ``Retry-After`` and GitHub's secondary-limit
        message. Primary (``secondary=False``): ``X-RateLimit-Remaining: 0`` and a reset
        ``retry_after`` seconds from now, no ``Retry-After`` (as GitHub answers).
        """
        if secondary:
            message = SECONDARY_RATE_LIMIT_MESSAGE.format(request_id=_request_id())
            headers = {"Retry-After": str(retry_after)}
        else:
            message = (
                f"API rate limit exceeded for installation ID {self.installation_id}. "
                "If you reach out to GitHub Support for help, please include the request ID "
                f"{_request_id()} and timestamp {iso(time.time())}."
            )
            headers = {
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + retry_after),
            }
        self._faults.append(Fault(operation_id, times, status, message, headers, True))

    def delay(self, operation_id: str, seconds: float, times: int | None = None) -> None:
        """Answer ``operation_id`` (``*``: any) ``seconds`` late; ``times`` None: always."""
        self._delays.append(Delay(operation_id, seconds, times))

    def clear_faults(self) -> None:
        self._faults.clear()
        self._delays.clear()

    def set_rate_remaining(self, remaining: int, installation_id: int | None = None) -> None:
        """Use up the hourly budget of an installation down to ``remaining`` requests."""
        with self.state.lock:
            key = f"installation:{installation_id or self.installation_id}"
            self.state.rate_used[key] = max(0, 5000 - remaining)

    # -- the server --------------------------------------------------------------------------

    def _repo(self, full_name: str) -> Repo:
        repo = self.state.repo(full_name)
        if repo is None:
            raise KeyError(f"repository {full_name} was not added to the fake GitHub")
        return repo

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.api_route("/{owner}/{name}.git/{rest:path}", methods=["GET", "POST"])
        async def git_smart_http(request: Request, owner: str, name: str, rest: str) -> Response:
            return await self._git(request, owner, name, rest)

        @app.get("/login/oauth/authorize")
        async def oauth_authorize(request: Request) -> Response:
            return await run_in_threadpool(self._oauth_authorize, request)

        @app.post("/login/oauth/access_token")
        async def oauth_access_token(request: Request) -> Response:
            body = await request.body()
            return await run_in_threadpool(self._oauth_access_token, request, body)

        @app.get("/_codeload/{owner}/{name}/legacy.tar.gz/{sha}")
        async def codeload(owner: str, name: str, sha: str) -> Response:
            return await run_in_threadpool(self._tarball, f"{owner}/{name}", sha)

        @app.api_route(
            "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        )
        async def rest_api(request: Request, path: str) -> Response:
            return await self._api(request)

        return app

    async def _api(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        raw_body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        body, body_problem = _parse_json(raw_body)
        record = RecordedRequest(
            method=request.method,
            path=raw_path,
            query=dict(request.query_params),
            headers=headers,
            body=body,
            raw_body=raw_body,
        )
        with self.state.lock:
            self.state.requests.append(record)

        match = self.spec.match(request.method, raw_path)
        if isinstance(match, RouteMiss):
            self._violation(
                record, [match.reason + " (add it to the spec subset if GitHub has it)"]
            )
            return self._finish(record, ApiError(404, "Not Found"), Principal("anonymous"))
        op = match.operation_id
        record.operation_id = op
        record.path_params = match.params
        if op not in HANDLERS:
            # In the description, but nobody taught the fake to answer it yet.
            reason = f"{op} is in the spec subset but the fake GitHub has no handler for it"
            self._violation(record, [reason])
            return self._finish(record, ApiError(501, reason), Principal("anonymous"))
        spec_request = SpecRequest.build(
            match,
            path=raw_path,
            query=request.query_params.multi_items(),
            headers=request.headers.items(),
            body=raw_body,
            host_url=self.url,
        )
        problems = [body_problem] if body_problem else []
        problems += self.spec.request_errors(spec_request)
        if not problems:
            problems = github_rules(op, body)
        if problems:
            self._violation(record, problems)

        delay = self._take_delay(op)
        if delay:
            await asyncio.sleep(delay)
        fault = self._take_fault(op)
        principal = self._authenticate(headers.get("authorization", ""), AUTH[op])
        if fault is not None:
            error = ApiError(fault.status, fault.message, headers=fault.headers)
            return self._finish(record, error, principal, fault_headers=fault.headers)
        if isinstance(principal, ApiError):
            return self._finish(record, principal, Principal("anonymous"))
        if problems:
            error = ApiError(
                400 if body_problem else 422,
                "Problems parsing JSON"
                if body_problem
                else "Invalid request.\n\n" + "\n".join(problems),
            )
            return self._finish(record, error, principal)
        if op != "rate-limit/get":
            with self.state.lock:
                limit, remaining, _, _ = rate_numbers(self.state, principal)
                if remaining <= 0:
                    error = ApiError(
                        403,
                        f"API rate limit exceeded for {principal.rate_key.replace(':', ' ID ')}.",
                    )
                    return self._finish(record, error, principal)
                self.state.rate_used[principal.rate_key] = limit - remaining + 1

        call = Call(
            state=self.state,
            spec=self.spec,
            app=self.settings,
            operation_id=op,
            params=match.params,
            query=dict(request.query_params),
            headers=headers,
            body=body,
            base_url=self.url,
            url=f"{self.url}{raw_path}" + (f"?{request.url.query}" if request.url.query else ""),
            principal=principal,
        )
        try:
            reply: Reply | ApiError = await run_in_threadpool(self._invoke, call)
        except ApiError as error:
            reply = error
        except Exception as error:  # a bug of the fake: answer 500 and fail the test
            with self.state.lock:
                self.state.response_violations.append(
                    Violation(record.method, record.path, op, [f"handler crashed: {error!r}"])
                )
            reply = ApiError(500, f"fake GitHub crashed: {error!r}")
        response = self._finish(record, reply, principal)
        if isinstance(reply, Reply) and reply.raw is None and 200 <= reply.status < 300:
            self._check_answer(record, spec_request, response)
        return response

    def _invoke(self, call: Call) -> Reply:
        with self.state.lock:
            return HANDLERS[call.operation_id](call)

    def _violation(self, record: RecordedRequest, reasons: list[str]) -> None:
        record.problems.extend(reasons)
        with self.state.lock:
            self.state.violations.append(
                Violation(record.method, record.path, record.operation_id, reasons)
            )

    def _check_answer(
        self, record: RecordedRequest, spec_request: SpecRequest, response: Response
    ) -> None:
        answer = SpecResponse(
            status_code=response.status_code,
            data=bytes(response.body) if response.body else None,
            content_type="application/json",
            headers=dict(response.headers),
        )
        problems = self.spec.response_errors(spec_request, answer)
        if problems:
            with self.state.lock:
                self.state.response_violations.append(
                    Violation(record.method, record.path, record.operation_id, problems)
                )

    def _finish(
        self,
        record: RecordedRequest,
        reply: Reply | ApiError,
        principal: Principal | ApiError,
        fault_headers: dict[str, str] | None = None,
    ) -> Response:
        if isinstance(reply, ApiError):
            if reply.violation:
                self._violation(record, [reply.message])
            status, content = reply.status, json.dumps(reply.body()).encode()
            headers = dict(reply.headers)
            media = "application/json; charset=utf-8"
        else:
            status, headers, media = reply.status, dict(reply.headers), reply.content_type
            if reply.raw is not None:
                content = reply.raw
            elif reply.body is None:
                content = b""
            else:
                content = json.dumps(reply.body).encode()
        who = principal if isinstance(principal, Principal) else Principal("anonymous")
        with self.state.lock:
            limit, remaining, reset, used = rate_numbers(self.state, who)
        rate_headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Resource": "core",
            "X-GitHub-Request-Id": _request_id(),
            "X-GitHub-Media-Type": "github.v3; format=json",
        }
        headers = {**rate_headers, **headers, **(fault_headers or {})}
        record.status = status
        if status == 204 or not content:
            return Response(status_code=status, headers=headers)
        return Response(content=content, status_code=status, headers=headers, media_type=media)

    def _take_fault(self, operation_id: str) -> Fault | None:
        with self.state.lock:
            for fault in self._faults:
                if fault.operation_id in (operation_id, "*") and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _take_delay(self, operation_id: str) -> float:
        with self.state.lock:
            for delay in self._delays:
                if delay.operation_id in (operation_id, "*"):
                    if delay.times is not None:
                        delay.times -= 1
                        if delay.times <= 0:
                            self._delays.remove(delay)
                    return delay.seconds
        return 0.0

    # -- authentication ----------------------------------------------------------------------

    def _authenticate(self, authorization: str, kind: str) -> Principal | ApiError:
        """GitHub's rules: App endpoints take an RS256 JWT, the user's own (``/user...``) a
        user-to-server token, the rest an installation token."""
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if not authorization:
            if kind == "optional":
                return Principal("anonymous")
            return ApiError(401, "Requires authentication")
        if kind == "jwt":
            if scheme.lower() != "bearer" or not credential:
                return ApiError(401, "A JSON web token could not be decoded")
            return self._verify_jwt(credential)
        if scheme.lower() not in {"token", "bearer"} or not credential:
            return ApiError(401, "Bad credentials")
        with self.state.lock:
            user_token = self.state.user_tokens.get(credential)
            if user_token is not None and not user_token.expired():
                if kind == "installation":
                    # The fake's repositories endpoints are the App's; a user token acting
                    # for the user there is not modelled.
                    return ApiError(403, "Resource not accessible by integration")
                return Principal("user", user=user_token.login)
            if kind == "user":
                if credential in self.state.tokens:
                    return ApiError(403, "Resource not accessible by integration")
                return ApiError(401, "Bad credentials")
            token = self.state.tokens.get(credential)
            if token is None or token.expired():
                if kind == "optional" and token is None and credential.count(".") == 2:
                    verified = self._verify_jwt(credential)  # /rate_limit also takes a JWT
                    if isinstance(verified, Principal):
                        return verified
                return ApiError(401, "Bad credentials")
            return Principal("installation", token)

    def _verify_jwt(self, credential: str) -> Principal | ApiError:
        try:
            claims = jwt.decode(
                credential,
                self.settings.public_key_pem,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_iss": False},
            )
        except jwt.PyJWTError:
            return ApiError(401, "A JSON web token could not be decoded")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if str(claims.get("iss")) not in {str(self.app_id), self.settings.client_id}:
            return ApiError(401, "'Issuer' claim ('iss') must match the App's id or client id")
        if not isinstance(iat, int) or iat > now + 1:
            return ApiError(
                401, "'Issued at' claim ('iat') must be an Integer representing a time in the past."
            )
        if not isinstance(exp, int) or exp <= now:
            return ApiError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the future "
                "time at which the assertion expires.",
            )
        if exp > iat + JWT_MAX_LIFETIME_SECONDS:
            return ApiError(401, "'Expiration time' claim ('exp') is too far in the future")
        return Principal("app")

    # -- the App's OAuth web flow (github.com, not the REST API) -----------------------------

    def _oauth_record(self, request: Request, operation: str, body: bytes) -> RecordedRequest:
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=None,
            raw_body=body,
            operation_id=operation,
        )
        with self.state.lock:
            self.state.requests.append(record)
        return record

    def _oauth_page(self, record: RecordedRequest, status: int, text: str) -> Response:
        record.status = status
        return Response(text, status_code=status, media_type="text/html; charset=utf-8")

    def _oauth_authorize(self, request: Request) -> Response:
        """GitHub's authorization page. The signed-in test user (``sign_in_as``) has already
        authorized the App, so, as on GitHub, the page redirects straight back with a code."""
        record = self._oauth_record(request, "oauth:authorize", b"")
        query = request.query_params
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri")
        settings = self.settings
        if client_id != settings.client_id:
            self._violation(record, [f"unknown client_id {client_id!r}"])
            return self._oauth_page(record, 404, "<h1>404: no application</h1>")
        if redirect_uri is not None and not _within_callback(redirect_uri, settings.callback_url):
            self._violation(
                record,
                [f"redirect_uri {redirect_uri!r} is outside the callback {settings.callback_url}"],
            )
            return self._oauth_page(
                record,
                400,
                "<h1>The redirect_uri is not associated with this application.</h1>",
            )
        if not query.get("state"):
            # GitHub accepts it, but a client that sends no state has no CSRF check.
            self._violation(record, ["no state parameter: the sign-in has no CSRF protection"])
        target = redirect_uri or settings.callback_url
        if target is None:
            return self._oauth_page(record, 400, "<h1>No callback URL is registered.</h1>")
        if settings.oauth_user is None:
            return self._oauth_page(record, 401, "<h1>Sign in to GitHub to continue</h1>")
        back: dict[str, str] = {}
        if settings.oauth_approves:
            code = secrets.token_hex(10)
            with self.state.lock:
                self.state.oauth_codes[code] = OAuthCode(
                    code, settings.oauth_user, redirect_uri, time.time() + 600
                )
            back["code"] = code
        else:
            back["error"] = "access_denied"
            back["error_description"] = "The user has denied your application access."
        if "state" in query:
            back["state"] = query["state"]
        separator = "&" if "?" in target else "?"
        record.status = 302
        return Response(status_code=302, headers={"Location": target + separator + urlencode(back)})

    def _oauth_access_token(self, request: Request, body: bytes) -> Response:
        """The code for a user-to-server token. GitHub answers 200 even to a refusal, with an
        ``error``; JSON when asked for it, else form encoding."""
        record = self._oauth_record(request, "oauth:access-token", body)
        params = dict(request.query_params)
        kind = request.headers.get("content-type", "")
        if body and "json" in kind:
            parsed, _ = _parse_json(body)
            params.update(parsed if isinstance(parsed, dict) else {})
        elif body:
            params.update(dict(parse_qsl(body.decode("utf-8", "replace"))))
        settings = self.settings
        now = time.time()
        answer: dict[str, Any]
        with self.state.lock:
            pending = self.state.oauth_codes.pop(str(params.get("code", "")), None)
            if (
                params.get("client_id") != settings.client_id
                or params.get("client_secret") != settings.client_secret
            ):
                answer = _oauth_error(
                    "incorrect_client_credentials",
                    "The client_id and/or client_secret passed are incorrect.",
                )
            elif pending is None or pending.expires_at <= now:
                answer = _oauth_error(
                    "bad_verification_code", "The code passed is incorrect or expired."
                )
            elif params.get("redirect_uri") not in (None, pending.redirect_uri):
                answer = _oauth_error(
                    "redirect_uri_mismatch",
                    "The redirect_uri MUST match the registered callback URL for this application.",
                )
            else:
                value = "ghu_" + secrets.token_hex(18)
                lifetime = settings.user_token_lifetime
                self.state.user_tokens[value] = UserToken(value, pending.login, now + lifetime)
                answer = {
                    "access_token": value,
                    "expires_in": int(lifetime),
                    "refresh_token": "ghr_" + secrets.token_hex(30),
                    "refresh_token_expires_in": 15897600,
                    "scope": "",
                    "token_type": "bearer",
                }
        record.status = 200
        if "application/json" in request.headers.get("accept", ""):
            return Response(json.dumps(answer), media_type="application/json; charset=utf-8")
        return Response(
            urlencode({k: str(v) for k, v in answer.items()}),
            media_type="application/x-www-form-urlencoded; charset=utf-8",
        )

    # -- git over HTTP and tarballs ----------------------------------------------------------

    async def _git(self, request: Request, owner: str, name: str, rest: str) -> Response:
        full_name = f"{owner}/{name}"
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=None,
            raw_body=b"",
            operation_id=f"git:{rest}",
        )
        with self.state.lock:
            self.state.requests.append(record)
            repo = self.state.repo(full_name)
            allowed = repo is not None and (not repo.private or self._git_token_ok(request, repo))
        if repo is None:
            record.status = 404
            return Response("Repository not found.\n", status_code=404, media_type="text/plain")
        if not allowed:
            record.status = 401
            return Response(
                "Invalid username or token.\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="GitHub"'},
                media_type="text/plain",
            )
        if rest.startswith("git-receive-pack") or "service=git-receive-pack" in str(
            request.url.query
        ):
            record.status = 403
            return Response("Pushing to the fake GitHub is not supported.\n", status_code=403)
        response = await run_http_backend(
            request, self._git_root.root, f"/{repo.full_name}.git/{rest}"
        )
        record.status = response.status_code
        return response

    def _git_token_ok(self, request: Request, repo: Repo) -> bool:
        """HTTP basic auth with an installation token as password (or as user name)."""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        for candidate in (password, user):
            token = self.state.tokens.get(candidate)
            if (
                token is not None
                and not token.expired()
                and token.installation_id == repo.installation_id
                and (token.repositories is None or repo.name in token.repositories)
            ):
                return True
        return False

    def _tarball(self, full_name: str, sha: str) -> Response:
        repo = self.state.repo(full_name)
        if repo is None or repo.git.resolve(sha) is None:
            return Response("Not Found", status_code=404)
        prefix = f"{repo.owner}-{repo.name}-{sha[:7]}/"
        archive = subprocess.run(
            [
                "git",
                "-C",
                str(repo.git.path),
                "archive",
                "--format=tar.gz",
                f"--prefix={prefix}",
                sha,
            ],
            capture_output=True,
            check=True,
        ).stdout
        return Response(archive, media_type="application/x-gzip")


def _parse_json(raw: bytes) -> tuple[Any, str | None]:
    if not raw:
        return None, None
    try:
        return json.loads(raw), None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"body is not valid JSON: {error}"


def _within_callback(redirect_uri: str, callback: str | None) -> bool:
    """GitHub's rule: the same scheme, host and port as the registered callback URL, and
    its path or a subdirectory of it."""
    if callback is None:
        return True
    given, registered = urlsplit(redirect_uri), urlsplit(callback)
    return (given.scheme, given.netloc) == (registered.scheme, registered.netloc) and (
        given.path + "/"
    ).startswith(registered.path.rstrip("/") + "/")


def _oauth_error(error: str, description: str) -> dict[str, str]:
    return {
        "error": error,
        "error_description": description,
        "error_uri": "https://docs.github.com/apps/managing-oauth-apps/"
        "troubleshooting-oauth-app-access-token-request-errors",
    }


def _request_id() -> str:
    return uuid.uuid4().hex[:20].upper()
