"""The fake GitHub's REST operations: state changes and answers shaped like GitHub's.

Each handler is registered under the operationId of GitHub's description and only runs once
the request was routed, validated against the description, authenticated and passed the
documented limits in ``github_rules`` (fake.py runs that pipeline). Answers start from the
description's own response schema (``GitHubSpec.skeleton``: every required field present) with
the real values laid over it, and fake.py validates them against the description too, so a
field PyGithub reads is never missing and never of the wrong type.
"""

from __future__ import annotations

import base64
import secrets
import string
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .fake_state import (
    DEFAULT_APP_PERMISSIONS,
    CheckRun,
    CommitInfo,
    Delivery,
    FakeState,
    FileChange,
    Installation,
    Issue,
    Pull,
    Repo,
    Token,
    WorkflowRun,
)
from .openapi import GitHubSpec, deep_merge

DOCS = "https://docs.github.com/rest"

# GitHub's documented limits that the description does not encode as schema keywords.
MAX_CHECK_OUTPUT_BYTES = 65535
MAX_COMMENT_CHARS = 65536
MAX_STATUS_DESCRIPTION_CHARS = 140
MAX_STATUSES_PER_CONTEXT = 1000
MAX_LABEL_DESCRIPTION_CHARS = 100
MAX_ANNOTATION_TITLE_CHARS = 255
MAX_ANNOTATION_TEXT_BYTES = 64 * 1024
CONTENTS_INLINE_LIMIT = 1024 * 1024  # larger files come back with encoding "none"

# Roles a test can give a user, and the permission level GitHub reports for each.
ROLE_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}
_ROLE_ORDER = ["none", "read", "triage", "write", "maintain", "admin"]


@dataclass
class AppSettings:
    """The App the fake pretends to be installed as; tests read these to authenticate."""

    app_id: int
    slug: str
    name: str
    owner: str
    client_id: str
    public_key_pem: bytes
    token_lifetime: float = 3600.0
    redelivery_status_code: int = 200
    # The App's OAuth (sign in with GitHub): its client secret, the callback URL registered
    # for it (None: any), who is signed in to the fake's github.com and whether they approve.
    client_secret: str = ""
    callback_url: str | None = None
    oauth_user: str | None = None
    oauth_approves: bool = True
    user_token_lifetime: float = 8 * 3600.0  # GitHub's expiring user tokens: 8 hours


@dataclass
class Principal:
    """Who sent a request: an installation token, the App (JWT), a user's token from the
    App's OAuth sign-in, or nobody."""

    kind: str  # "installation" | "app" | "user" | "anonymous"
    token: Token | None = None
    user: str | None = None

    @property
    def rate_key(self) -> str:
        if self.token is not None:
            return f"installation:{self.token.installation_id}"
        if self.user is not None:
            return f"user:{self.user.lower()}"
        return self.kind


class ApiError(Exception):
    """An answer other than success, in GitHub's error format.

    ``violation`` marks refusals caused by a request the real GitHub refuses whatever the
    state (a documented limit), as opposed to state-dependent answers (404, already exists).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        violation: bool = False,
        docs: str = DOCS,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.violation = violation
        self.docs = docs

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "documentation_url": self.docs}
        if self.errors:
            body["errors"] = self.errors
        body["status"] = str(self.status)
        return body


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


@dataclass
class Reply:
    """A successful answer: JSON ``body`` (None for no content) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json; charset=utf-8"


@dataclass
class Call:
    """One validated, authenticated request, as a handler sees it."""

    state: FakeState
    spec: GitHubSpec
    app: AppSettings
    operation_id: str
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    base_url: str
    url: str
    principal: Principal

    def repo(self, *, scoped: bool = True) -> Repo:
        """The repository of the path; 404 when unknown or outside the token's reach."""
        repo = self.state.repo(f"{self.params['owner']}/{self.params['repo']}")
        if repo is None:
            raise not_found()
        token = self.principal.token
        if scoped and token is not None:
            if token.installation_id != repo.installation_id:
                raise not_found()
            if token.repositories is not None and repo.name not in token.repositories:
                raise not_found()
        return repo

    def int_param(self, name: str) -> int:
        return int(self.params[name])

    def api(self, repo: Repo) -> str:
        return f"{self.base_url}/repos/{repo.full_name}"

    def html(self, repo: Repo) -> str:
        return f"{self.base_url}/{repo.full_name}"

    def actor(self) -> dict[str, Any]:
        """The user GitHub attributes an App's writes to: ``<slug>[bot]``."""
        return user_json(self, f"{self.app.slug}[bot]", "Bot")


Handler = Callable[[Call], Reply]
HANDLERS: dict[str, Handler] = {}
AUTH: dict[str, str] = {}


def operation(operation_id: str, auth: str = "installation") -> Callable[[Handler], Handler]:
    """Register a handler; ``auth`` is "installation" (token), "jwt" (the App), "user" (a
    user-to-server token from the App's OAuth) or "optional"."""

    def register(handler: Handler) -> Handler:
        HANDLERS[operation_id] = handler
        AUTH[operation_id] = auth
        return handler

    return register


# -- documented limits beyond the schema ---------------------------------------------------------


def github_rules(operation_id: str, body: Any) -> list[str]:
    """Reasons GitHub refuses ``body`` although the description's schema accepts it."""
    if not isinstance(body, dict):
        return []
    problems: list[str] = []
    if operation_id in {"checks/create", "checks/update"}:
        output = body.get("output")
        if isinstance(output, dict):
            for key in ("summary", "text"):
                value = output.get(key)
                if isinstance(value, str) and len(value.encode()) > MAX_CHECK_OUTPUT_BYTES:
                    problems.append(
                        f"output.{key} is {len(value.encode())} bytes in UTF-8, "
                        f"at most {MAX_CHECK_OUTPUT_BYTES} allowed"
                    )
            for index, note in enumerate(output.get("annotations") or []):
                if not isinstance(note, dict):
                    continue
                title = note.get("title")
                if isinstance(title, str) and len(title) > MAX_ANNOTATION_TITLE_CHARS:
                    problems.append(f"output.annotations.{index}.title is over 255 characters")
                for key in ("message", "raw_details"):
                    value = note.get(key)
                    if isinstance(value, str) and len(value.encode()) > MAX_ANNOTATION_TEXT_BYTES:
                        problems.append(f"output.annotations.{index}.{key} is over 64 KB")
                has_columns = "start_column" in note or "end_column" in note
                if has_columns and note.get("start_line") != note.get("end_line"):
                    problems.append(
                        f"output.annotations.{index}: start_column/end_column are only "
                        "allowed when start_line equals end_line"
                    )
        if operation_id == "checks/create":
            completed = body.get("status") == "completed" or "completed_at" in body
            if completed and "conclusion" not in body:
                problems.append("conclusion is required when status is completed")
    elif operation_id == "repos/create-commit-status":
        description = body.get("description")
        if isinstance(description, str) and len(description) > MAX_STATUS_DESCRIPTION_CHARS:
            problems.append(
                f"description is too long ({len(description)} characters, "
                f"maximum is {MAX_STATUS_DESCRIPTION_CHARS})"
            )
    elif operation_id in {"issues/create-comment", "issues/update-comment"}:
        text = body.get("body")
        if isinstance(text, str) and len(text) > MAX_COMMENT_CHARS:
            problems.append(
                f"body is too long ({len(text)} characters, maximum is {MAX_COMMENT_CHARS})"
            )
    elif operation_id == "pulls/create-review":
        event = body.get("event")
        if event in {"REQUEST_CHANGES", "COMMENT"} and not body.get("body"):
            problems.append(f"body is required when event is {event}")
        text = body.get("body")
        if isinstance(text, str) and len(text) > MAX_COMMENT_CHARS:
            problems.append(f"body is too long (maximum is {MAX_COMMENT_CHARS} characters)")
    elif operation_id == "issues/create-label":
        color = body.get("color")
        if isinstance(color, str) and not _is_hex_color(color):
            problems.append(f"color {color!r} is invalid (6 hex digits, no leading #)")
        description = body.get("description")
        if isinstance(description, str) and len(description) > MAX_LABEL_DESCRIPTION_CHARS:
            problems.append("description is too long (maximum is 100 characters)")
    return problems


def _is_hex_color(color: str) -> bool:
    return len(color) == 6 and all(c in string.hexdigits for c in color)


# -- shared renderers ----------------------------------------------------------------------------


def iso(timestamp: float) -> str:
    """GitHub's timestamp format: UTC, whole seconds, ``Z``."""
    return datetime.fromtimestamp(int(timestamp), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_id(text: str) -> int:
    """Users and orgs get ids derived from their login, so answers agree across calls."""
    return zlib.crc32(text.encode()) % 90_000_000 + 10_000_000


def node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"{kind}{number}".encode()).decode().rstrip("=")


def user_json(call: Call, login: str, kind: str = "User") -> dict[str, Any]:
    uid = stable_id(login)
    api = f"{call.base_url}/users/{quote(login)}"
    values = {
        "login": login,
        "id": uid,
        "node_id": node_id("U_", uid),
        "avatar_url": f"{call.base_url}/avatars/{uid}",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{call.base_url}/{quote(login)}",
        "type": kind,
        "site_admin": False,
    }
    for key in (
        "followers",
        "following",
        "gists",
        "starred",
        "subscriptions",
        "organizations",
        "repos",
        "events",
        "received_events",
    ):
        values[f"{key}_url"] = f"{api}/{key}"
    return deep_merge(call.spec.skeleton("simple-user"), values)


def repo_json(call: Call, repo: Repo, schema: str = "full-repository") -> dict[str, Any]:
    api = call.api(repo)
    skeleton = call.spec.skeleton(schema)
    values: dict[str, Any] = {
        key: f"{api}/{key.removesuffix('_url')}"
        for key, value in skeleton.items()
        if key.endswith("_url") and isinstance(value, str)
    }
    values.update(
        {
            "id": repo.id,
            "node_id": node_id("R_", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": user_json(call, repo.owner, repo.owner_type),
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "html_url": call.html(repo),
            "description": None,
            "fork": False,
            "url": api,
            "clone_url": f"{call.base_url}/{repo.full_name}.git",
            "git_url": f"{call.base_url}/{repo.full_name}.git",
            "ssh_url": f"git@127.0.0.1:{repo.full_name}.git",
            "svn_url": call.html(repo),
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "default_branch": repo.default_branch,
            "created_at": iso(repo.created_at),
            "updated_at": iso(repo.created_at),
            "pushed_at": iso(repo.created_at),
            "archived": False,
            "disabled": False,
            "permissions": {
                "admin": False,
                "maintain": False,
                "push": True,
                "triage": True,
                "pull": True,
            },
            "pulls_url": f"{api}/pulls{{/number}}",
            "issues_url": f"{api}/issues{{/number}}",
            "statuses_url": f"{api}/statuses/{{sha}}",
            "contents_url": f"{api}/contents/{{+path}}",
            "labels_url": f"{api}/labels{{/name}}",
            "commits_url": f"{api}/commits{{/sha}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "compare_url": f"{api}/compare/{{base}}...{{head}}",
            "archive_url": f"{api}/{{archive_format}}{{/ref}}",
        }
    )
    if "network_count" in skeleton:
        values["network_count"] = 0
        values["subscribers_count"] = 0
    return deep_merge(skeleton, values)


def label_json(call: Call, repo: Repo, label: dict[str, Any]) -> dict[str, Any]:
    return deep_merge(call.spec.skeleton("label"), label)


def commit_json(call: Call, repo: Repo, info: CommitInfo) -> dict[str, Any]:
    api = call.api(repo)
    return deep_merge(
        call.spec.skeleton("commit"),
        {
            "url": f"{api}/commits/{info.sha}",
            "sha": info.sha,
            "node_id": node_id("C_", stable_id(info.sha)),
            "html_url": f"{call.html(repo)}/commit/{info.sha}",
            "comments_url": f"{api}/commits/{info.sha}/comments",
            "commit": {
                "url": f"{api}/git/commits/{info.sha}",
                "author": {
                    "name": info.author_name,
                    "email": info.author_email,
                    "date": _git_date(info.author_date),
                },
                "committer": {
                    "name": info.committer_name,
                    "email": info.committer_email,
                    "date": _git_date(info.committer_date),
                },
                "message": info.message,
                "comment_count": 0,
                "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
            },
            "author": None,
            "committer": None,
            "parents": [
                {
                    "sha": parent,
                    "url": f"{api}/commits/{parent}",
                    "html_url": f"{call.html(repo)}/commit/{parent}",
                }
                for parent in info.parents
            ],
        },
    )


def _git_date(text: str) -> str:
    """git's strict ISO dates carry offsets; GitHub answers in UTC with ``Z``."""
    return iso(datetime.fromisoformat(text).timestamp())


def diff_entry_json(call: Call, repo: Repo, sha: str, change: FileChange) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sha": change.blob_sha,
        "filename": change.filename,
        "status": change.status,
        "additions": change.additions,
        "deletions": change.deletions,
        "changes": change.additions + change.deletions,
        "blob_url": f"{call.html(repo)}/blob/{sha}/{quote(change.filename)}",
        "raw_url": f"{call.html(repo)}/raw/{sha}/{quote(change.filename)}",
        "contents_url": f"{call.api(repo)}/contents/{quote(change.filename)}?ref={sha}",
    }
    if change.patch is not None:
        values["patch"] = change.patch
    if change.previous_filename:
        values["previous_filename"] = change.previous_filename
    return deep_merge(call.spec.skeleton("diff-entry"), values)


def paginate(call: Call, items: Sequence[Any], *, wrap: str | None = None) -> Reply:
    """One page of ``items`` plus GitHub's ``Link`` header (next, last, first, prev)."""
    per_page = max(1, min(int(call.query.get("per_page", 30)), 100))
    page = max(1, int(call.query.get("page", 1)))
    last = max(1, -(-len(items) // per_page))
    chunk = list(items[(page - 1) * per_page : page * per_page])
    links = []

    def link(number: int, rel: str) -> str:
        return f'<{_with_query(call.url, page=number, per_page=per_page)}>; rel="{rel}"'

    if page > 1:
        links.append(link(page - 1, "prev"))
    if page < last:
        links.append(link(page + 1, "next"))
        links.append(link(last, "last"))
    if page > 1:
        links.append(link(1, "first"))
    headers = {"Link": ", ".join(links)} if links else {}
    body: Any = chunk if wrap is None else {"total_count": len(items), wrap: chunk}
    return Reply(200, body, headers)


def _with_query(url: str, **params: Any) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({key: str(value) for key, value in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


def _resolve_or_404(repo: Repo, ref: str, message: str | None = None) -> str:
    sha = repo.git.resolve(ref)
    if sha is None:
        raise ApiError(404 if message is None else 422, message or f"No commit found for {ref}")
    return sha


# -- repositories and git data -------------------------------------------------------------------


@operation("repos/get")
def get_repository(call: Call) -> Reply:
    return Reply(200, repo_json(call, call.repo()))


@operation("repos/get-content")
def get_content(call: Call) -> Reply:
    repo = call.repo()
    ref = call.query.get("ref") or repo.default_branch
    sha = repo.git.resolve(ref)
    if sha is None:
        raise ApiError(404, f"No commit found for the ref {ref}")
    path = call.params.get("path", "").strip("/")
    kind = repo.git.object_type(sha, path)
    if kind is None:
        raise not_found()
    accept = call.headers.get("accept", "")
    if kind == "blob":
        data = repo.git.read_blob(sha, path) or b""
        if "vnd.github.raw" in accept:
            return Reply(200, raw=data, content_type="application/vnd.github.raw")
        return Reply(200, _content_file(call, repo, ref, sha, path, data))
    if kind == "tree":
        entries = []
        for mode, obj_kind, obj, size, name in repo.git.list_tree(sha, path):
            entry_path = f"{path}/{name}" if path else name
            entry_type = {"blob": "file", "tree": "dir", "commit": "submodule"}[obj_kind]
            if mode == "120000":
                entry_type = "symlink"
            entries.append(_content_entry(call, repo, ref, entry_path, obj, size, entry_type))
        return Reply(200, entries)
    raise not_found()


def _content_entry(
    call: Call, repo: Repo, ref: str, path: str, sha: str, size: int, kind: str
) -> dict[str, Any]:
    api = f"{call.api(repo)}/contents/{quote(path)}?ref={quote(ref)}"
    html = f"{call.html(repo)}/{'tree' if kind == 'dir' else 'blob'}/{quote(ref)}/{quote(path)}"
    git_url = f"{call.api(repo)}/git/{'trees' if kind == 'dir' else 'blobs'}/{sha}"
    download = (
        f"{call.base_url}/raw/{repo.full_name}/{quote(ref)}/{quote(path)}"
        if kind == "file"
        else None
    )
    return {
        "type": kind,
        "size": size,
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "sha": sha,
        "url": api,
        "git_url": git_url,
        "html_url": html,
        "download_url": download,
        "_links": {"self": api, "git": git_url, "html": html},
    }


def _content_file(
    call: Call, repo: Repo, ref: str, sha: str, path: str, data: bytes
) -> dict[str, Any]:
    blob = repo.git.object_sha(sha, path)
    entry = _content_entry(call, repo, ref, path, blob, len(data), "file")
    if len(data) > CONTENTS_INLINE_LIMIT:
        entry.update(content="", encoding="none")
    else:
        encoded = base64.b64encode(data).decode()
        # GitHub wraps the base64 at 60 characters per line.
        wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
        entry.update(content=wrapped + ("\n" if wrapped else ""), encoding="base64")
    return deep_merge(call.spec.skeleton("content-file"), entry)


@operation("git/get-ref")
def get_ref(call: Call) -> Reply:
    repo = call.repo()
    found = repo.git.full_ref(call.params["ref"])
    if found is None:
        raise not_found()
    name, sha = found
    kind = repo.git.run("cat-file", "-t", sha).strip()
    api = call.api(repo)
    return Reply(
        200,
        deep_merge(
            call.spec.skeleton("git-ref"),
            {
                "ref": name,
                "node_id": node_id("REF_", stable_id(name)),
                "url": f"{api}/git/{name}",
                "object": {"type": kind, "sha": sha, "url": f"{api}/git/{kind}s/{sha}"},
            },
        ),
    )


@operation("repos/get-collaborator-permission-level")
def get_permission(call: Call) -> Reply:
    repo = call.repo()
    username = call.params["username"]
    role = repo.permissions.get(username.lower(), "read")
    level = _ROLE_ORDER.index(role)
    user = user_json(call, username)
    user["permissions"] = {
        "pull": level >= _ROLE_ORDER.index("read"),
        "triage": level >= _ROLE_ORDER.index("triage"),
        "push": level >= _ROLE_ORDER.index("write"),
        "maintain": level >= _ROLE_ORDER.index("maintain"),
        "admin": level >= _ROLE_ORDER.index("admin"),
    }
    user["role_name"] = role
    return Reply(
        200,
        deep_merge(
            call.spec.skeleton("repository-collaborator-permission"),
            {"permission": ROLE_PERMISSION[role], "role_name": role, "user": user},
        ),
    )


@operation("repos/compare-commits-with-basehead")
def compare(call: Call) -> Reply:
    repo = call.repo()
    basehead = call.params["basehead"]
    separator = "..." if "..." in basehead else ".."
    if separator not in basehead:
        raise not_found()
    base_ref, head_ref = basehead.split(separator, 1)
    base = _resolve_or_404(repo, base_ref)
    head = _resolve_or_404(repo, head_ref)
    merge_base = repo.git.merge_base(base, head) or base
    ahead = repo.git.commits_between(base, head)
    behind = repo.git.commits_between(head, base)
    status = (
        "identical"
        if not ahead and not behind
        else "ahead"
        if not behind
        else "behind"
        if not ahead
        else "diverged"
    )
    html = f"{call.html(repo)}/compare/{base_ref}...{head_ref}"
    commits = [commit_json(call, repo, repo.git.commit(sha)) for sha in ahead[:250]]
    files = [diff_entry_json(call, repo, head, c) for c in repo.git.changes(base, head)]
    body = deep_merge(
        call.spec.skeleton("commit-comparison"),
        {
            "url": f"{call.api(repo)}/compare/{basehead}",
            "html_url": html,
            "permalink_url": f"{call.html(repo)}/compare/{base}...{head}",
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "base_commit": commit_json(call, repo, repo.git.commit(base)),
            "merge_base_commit": commit_json(call, repo, repo.git.commit(merge_base)),
            "status": status,
            "ahead_by": len(ahead),
            "behind_by": len(behind),
            "total_commits": len(ahead),
            "commits": commits,
            "files": files,
        },
    )
    return Reply(200, body)


@operation("repos/download-tarball-archive")
def download_tarball(call: Call) -> Reply:
    """GitHub redirects to codeload; the fake's codeload is a plain route of the same server."""
    repo = call.repo()
    sha = _resolve_or_404(repo, call.params["ref"])
    location = f"{call.base_url}/_codeload/{repo.full_name}/legacy.tar.gz/{sha}"
    return Reply(302, None, {"Location": location})


# -- pull requests -------------------------------------------------------------------------------


def sync_pull(state: FakeState, repo: Repo, pull: Pull) -> None:
    """Re-read the pull's shas from git and refresh refs/pull/N/{head,merge} when they moved.

    GitHub updates an open pull when its branches move; reading them live keeps the API, the
    pull refs and what ``git clone`` returns in agreement after a test commits to a branch.
    """
    if pull.state != "open" and pull.head_sha:
        return
    head_repo = state.repo(pull.head_repo)
    if head_repo is None:
        raise ApiError(404, f"head repository {pull.head_repo} is not registered")
    head_sha = head_repo.git.resolve(f"refs/heads/{pull.head}")
    base_sha = repo.git.resolve(f"refs/heads/{pull.base}")
    if head_sha is None or base_sha is None:
        raise ApiError(404, f"branch {pull.head} or {pull.base} does not exist")
    if head_sha == pull.head_sha and base_sha == pull.base_sha:
        return
    repo.git.fetch_into(
        head_repo.git.path, f"refs/heads/{pull.head}", f"refs/pull/{pull.number}/head"
    )
    merge = repo.git.test_merge(base_sha, head_sha, f"Merge {head_sha} into {base_sha}")
    repo.git.update_ref(f"refs/pull/{pull.number}/merge", merge)
    pull.head_sha, pull.base_sha, pull.merge_commit_sha = head_sha, base_sha, merge
    pull.updated_at = time.time()


def _pull(call: Call, repo: Repo) -> Pull:
    pull = repo.pulls.get(call.int_param("pull_number"))
    if pull is None:
        raise not_found()
    sync_pull(call.state, repo, pull)
    return pull


def pull_json(call: Call, repo: Repo, pull: Pull) -> dict[str, Any]:
    api = call.api(repo)
    url = f"{api}/pulls/{pull.number}"
    html = f"{call.html(repo)}/pull/{pull.number}"
    head_repo = call.state.repo(pull.head_repo) or repo
    changes = repo.git.changes(pull.base_sha, pull.head_sha)
    commits = repo.git.commits_between(pull.base_sha, pull.head_sha)
    issue = repo.issues[pull.number]

    def side(branch: str, sha: str, side_repo: Repo) -> dict[str, Any]:
        return {
            "label": f"{side_repo.owner}:{branch}",
            "ref": branch,
            "sha": sha,
            "user": user_json(call, side_repo.owner, side_repo.owner_type),
            "repo": repo_json(call, side_repo, "repository"),
        }

    links = {
        "self": url,
        "html": html,
        "issue": f"{api}/issues/{pull.number}",
        "comments": f"{api}/issues/{pull.number}/comments",
        "review_comments": f"{url}/comments",
        "review_comment": f"{api}/pulls/comments{{/number}}",
        "commits": f"{url}/commits",
        "statuses": f"{api}/statuses/{pull.head_sha}",
    }
    return deep_merge(
        call.spec.skeleton("pull-request"),
        {
            "url": url,
            "id": pull.id,
            "node_id": node_id("PR_", pull.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": links["issue"],
            "commits_url": links["commits"],
            "review_comments_url": links["review_comments"],
            "review_comment_url": links["review_comment"],
            "comments_url": links["comments"],
            "statuses_url": links["statuses"],
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "user": user_json(call, pull.user),
            "body": pull.body,
            "labels": [label_json(call, repo, repo.labels[name.lower()]) for name in issue.labels],
            "created_at": iso(pull.created_at),
            "updated_at": iso(pull.updated_at),
            "closed_at": iso(pull.closed_at) if pull.closed_at else None,
            "merged_at": iso(pull.closed_at) if pull.merged and pull.closed_at else None,
            "merge_commit_sha": pull.merge_commit_sha,
            "head": side(pull.head, pull.head_sha, head_repo),
            "base": side(pull.base, pull.base_sha, repo),
            "_links": {key: {"href": href} for key, href in links.items()},
            "author_association": "CONTRIBUTOR",
            "auto_merge": None,
            "draft": pull.draft,
            "merged": pull.merged,
            "mergeable": pull.merge_commit_sha is not None,
            "rebaseable": pull.merge_commit_sha is not None,
            "mergeable_state": "clean" if pull.merge_commit_sha else "dirty",
            "merged_by": None,
            "comments": len(issue.comment_ids),
            "review_comments": 0,
            "maintainer_can_modify": False,
            "commits": len(commits),
            "additions": sum(c.additions for c in changes),
            "deletions": sum(c.deletions for c in changes),
            "changed_files": len(changes),
        },
    )


@operation("pulls/get")
def get_pull(call: Call) -> Reply:
    repo = call.repo()
    return Reply(200, pull_json(call, repo, _pull(call, repo)))


@operation("pulls/list-files")
def list_pull_files(call: Call) -> Reply:
    repo = call.repo()
    pull = _pull(call, repo)
    changes = repo.git.changes(pull.base_sha, pull.head_sha)[:3000]  # GitHub's cap
    return paginate(call, [diff_entry_json(call, repo, pull.head_sha, c) for c in changes])


@operation("pulls/list-commits")
def list_pull_commits(call: Call) -> Reply:
    repo = call.repo()
    pull = _pull(call, repo)
    shas = repo.git.commits_between(pull.base_sha, pull.head_sha)[:250]  # GitHub's cap
    return paginate(call, [commit_json(call, repo, repo.git.commit(sha)) for sha in shas])


def pull_simple_json(call: Call, repo: Repo, pull: Pull) -> dict[str, Any]:
    """The `pull-request-simple` shape of list endpoints: the full object's fields it has."""
    full = pull_json(call, repo, pull)
    simple = call.spec.skeleton("pull-request-simple")
    return deep_merge(simple, {key: value for key, value in full.items() if key in simple})


@operation("pulls/list")
def list_pulls(call: Call) -> Reply:
    """Filtered as GitHub does: `state` (open, closed, all), `head` (owner:branch), `base`."""
    repo = call.repo()
    state = call.query.get("state", "open")
    head = call.query.get("head")
    base = call.query.get("base")
    found = []
    for pull in sorted(repo.pulls.values(), key=lambda p: -p.number):  # newest first
        sync_pull(call.state, repo, pull)
        head_repo = call.state.repo(pull.head_repo) or repo
        if state != "all" and pull.state != state:
            continue
        if head and head != f"{head_repo.owner}:{pull.head}":
            continue
        if base and base != pull.base:
            continue
        found.append(pull_simple_json(call, repo, pull))
    return paginate(call, found)


@operation("repos/list-pull-requests-associated-with-commit")
def list_pulls_of_commit(call: Call) -> Reply:
    """The pull requests whose commits hold the SHA (open or not), and the merged one whose
    merge commit it is, as GitHub lists them."""
    repo = call.repo()
    sha = _resolve_or_404(repo, call.params["commit_sha"])
    found = []
    for pull in sorted(repo.pulls.values(), key=lambda p: -p.number):
        sync_pull(call.state, repo, pull)
        holds = sha in repo.git.commits_between(pull.base_sha, pull.head_sha)
        if holds or (pull.merge_commit_sha == sha and pull.merged):
            found.append(pull_simple_json(call, repo, pull))
    return paginate(call, found)


_REVIEW_STATES = {
    "APPROVE": "APPROVED",
    "REQUEST_CHANGES": "CHANGES_REQUESTED",
    "COMMENT": "COMMENTED",
}


@operation("pulls/create-review")
def create_review(call: Call) -> Reply:
    repo = call.repo()
    pull = _pull(call, repo)
    body = call.body or {}
    review_id = call.state.next_id()
    event = body.get("event")
    state = _REVIEW_STATES.get(event, "PENDING")
    html = f"{call.html(repo)}/pull/{pull.number}#pullrequestreview-{review_id}"
    pull_url = f"{call.api(repo)}/pulls/{pull.number}"
    review = deep_merge(
        call.spec.skeleton("pull-request-review"),
        {
            "id": review_id,
            "node_id": node_id("PRR_", review_id),
            "user": call.actor(),
            "body": body.get("body", ""),
            "state": state,
            "html_url": html,
            "pull_request_url": pull_url,
            "_links": {"html": {"href": html}, "pull_request": {"href": pull_url}},
            "commit_id": body.get("commit_id") or pull.head_sha,
            "author_association": "NONE",
        },
    )
    if state != "PENDING":
        review["submitted_at"] = iso(time.time())
    call.state.reviews[review_id] = review
    pull.review_ids.append(review_id)
    return Reply(200, review)


@operation("pulls/list-reviews")
def list_reviews(call: Call) -> Reply:
    repo = call.repo()
    pull = _pull(call, repo)
    return paginate(call, [call.state.reviews[i] for i in pull.review_ids])


@operation("pulls/dismiss-review")
def dismiss_review(call: Call) -> Reply:
    repo = call.repo()
    pull = _pull(call, repo)
    review_id = call.int_param("review_id")
    if review_id not in pull.review_ids:
        raise not_found()
    review = call.state.reviews[review_id]
    if review["state"] not in {"APPROVED", "CHANGES_REQUESTED"}:
        raise ApiError(
            422,
            f"Can not dismiss a {review['state'].lower().replace('_', ' ')} pull request review",
        )
    review["state"] = "DISMISSED"
    return Reply(200, review)


# -- issues: comments and labels -----------------------------------------------------------------


def _issue(call: Call, repo: Repo) -> Issue:
    issue = repo.issues.get(call.int_param("issue_number"))
    if issue is None:
        raise not_found()
    return issue


@operation("issues/list-comments")
def list_comments(call: Call) -> Reply:
    repo = call.repo()
    issue = _issue(call, repo)
    comments = [call.state.comments[i] for i in issue.comment_ids]
    since = call.query.get("since")
    if since:
        comments = [c for c in comments if c["updated_at"] >= since]
    return paginate(call, comments)


@operation("issues/create-comment")
def create_comment(call: Call) -> Reply:
    repo = call.repo()
    issue = _issue(call, repo)
    comment_id = call.state.next_id()
    now = iso(time.time())
    kind = "pull" if issue.number in repo.pulls else "issues"
    url = f"{call.api(repo)}/issues/comments/{comment_id}"
    comment = deep_merge(
        call.spec.skeleton("issue-comment"),
        {
            "id": comment_id,
            "node_id": node_id("IC_", comment_id),
            "url": url,
            "html_url": f"{call.html(repo)}/{kind}/{issue.number}#issuecomment-{comment_id}",
            "issue_url": f"{call.api(repo)}/issues/{issue.number}",
            "body": call.body["body"],
            "user": call.actor(),
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
        },
    )
    call.state.comments[comment_id] = comment
    call.state.comment_issue[comment_id] = (repo.full_name, issue.number)
    issue.comment_ids.append(comment_id)
    return Reply(201, comment, {"Location": url})


@operation("issues/update-comment")
def update_comment(call: Call) -> Reply:
    repo = call.repo()
    comment_id = call.int_param("comment_id")
    where = call.state.comment_issue.get(comment_id)
    if where is None or where[0] != repo.full_name:
        raise not_found()
    comment = call.state.comments[comment_id]
    comment["body"] = call.body["body"]
    comment["updated_at"] = iso(time.time())
    return Reply(200, comment)


def _new_label(call: Call, repo: Repo, name: str, color: str, description: str | None) -> dict:
    label_id = call.state.next_id()
    label = {
        "id": label_id,
        "node_id": node_id("LA_", label_id),
        "url": f"{call.api(repo)}/labels/{quote(name)}",
        "name": name,
        "description": description,
        "color": color.lower(),
        "default": False,
    }
    repo.labels[name.lower()] = label
    return label


@operation("issues/create-label")
def create_label(call: Call) -> Reply:
    repo = call.repo()
    name = call.body["name"]
    if name.lower() in repo.labels:
        raise ApiError(
            422,
            "Validation Failed",
            errors=[{"resource": "Label", "code": "already_exists", "field": "name"}],
        )
    label = _new_label(
        call, repo, name, call.body.get("color", "ededed"), call.body.get("description")
    )
    return Reply(201, label_json(call, repo, label), {"Location": label["url"]})


@operation("issues/add-labels")
def add_labels(call: Call) -> Reply:
    repo = call.repo()
    issue = _issue(call, repo)
    body = call.body
    raw = body.get("labels", []) if isinstance(body, dict) else body
    names = [item["name"] if isinstance(item, dict) else item for item in raw or []]
    for name in names:
        if name.lower() not in repo.labels:  # GitHub creates unknown labels on the fly
            _new_label(call, repo, name, "ededed", None)
        if name.lower() not in (n.lower() for n in issue.labels):
            issue.labels.append(repo.labels[name.lower()]["name"])
    return Reply(200, [label_json(call, repo, repo.labels[n.lower()]) for n in issue.labels])


@operation("issues/remove-label")
def remove_label(call: Call) -> Reply:
    repo = call.repo()
    issue = _issue(call, repo)
    name = call.params["name"]
    current = [n for n in issue.labels if n.lower() == name.lower()]
    if not current:
        raise ApiError(404, "Label does not exist")
    issue.labels.remove(current[0])
    return Reply(200, [label_json(call, repo, repo.labels[n.lower()]) for n in issue.labels])


# -- commit statuses -----------------------------------------------------------------------------


@operation("repos/create-commit-status")
def create_status(call: Call) -> Reply:
    repo = call.repo()
    sha = call.params["sha"]
    resolved = repo.git.resolve(sha)
    if resolved is None or not resolved.startswith(sha.lower()):
        raise ApiError(422, f"No commit found for SHA: {sha}")
    body = call.body
    context = body.get("context") or "default"
    same = [s for s in repo.statuses.get(resolved, []) if s["context"].lower() == context.lower()]
    if len(same) >= MAX_STATUSES_PER_CONTEXT:
        raise ApiError(
            422,
            "This SHA and context has reached the maximum number of statuses.",
            violation=True,
        )
    status_id = call.state.next_id()
    now = iso(time.time())
    actor = call.actor()
    status = deep_merge(
        call.spec.skeleton("status"),
        {
            "url": f"{call.api(repo)}/statuses/{resolved}",
            "avatar_url": actor["avatar_url"],
            "id": status_id,
            "node_id": node_id("SC_", status_id),
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": context,
            "created_at": now,
            "updated_at": now,
            "creator": actor,
        },
    )
    repo.statuses.setdefault(resolved, []).append(status)
    return Reply(201, status, {"Location": status["url"]})


@operation("repos/list-commit-statuses-for-ref")
def list_statuses(call: Call) -> Reply:
    repo = call.repo()
    sha = _resolve_or_404(repo, call.params["ref"])
    return paginate(call, list(reversed(repo.statuses.get(sha, []))))


@operation("repos/get-combined-status-for-ref")
def combined_status(call: Call) -> Reply:
    repo = call.repo()
    sha = _resolve_or_404(repo, call.params["ref"])
    latest: dict[str, dict[str, Any]] = {}
    for status in repo.statuses.get(sha, []):
        latest[status["context"].lower()] = status
    statuses = list(latest.values())
    states = {s["state"] for s in statuses}
    if states & {"error", "failure"}:
        state = "failure"
    elif not statuses or "pending" in states:
        state = "pending"
    else:
        state = "success"
    page = paginate(call, statuses)
    body = deep_merge(
        call.spec.skeleton("combined-commit-status"),
        {
            "state": state,
            "sha": sha,
            "total_count": len(statuses),
            "statuses": page.body,
            "repository": repo_json(call, repo, "minimal-repository"),
            "commit_url": f"{call.api(repo)}/commits/{sha}",
            "url": f"{call.api(repo)}/commits/{sha}/status",
        },
    )
    return Reply(200, body, page.headers)


# -- check runs ----------------------------------------------------------------------------------


def _annotation(call: Call, repo: Repo, sha: str, note: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": note["path"],
        "start_line": note["start_line"],
        "end_line": note["end_line"],
        "start_column": note.get("start_column"),
        "end_column": note.get("end_column"),
        "annotation_level": note["annotation_level"],
        "title": note.get("title"),
        "message": note["message"],
        "raw_details": note.get("raw_details"),
        "blob_href": f"{call.html(repo)}/blob/{sha}/{quote(note['path'])}",
    }


def _apply_check_fields(call: Call, run: CheckRun, repo: Repo, body: dict[str, Any]) -> None:
    data = run.data
    for key in ("name", "details_url", "external_id", "started_at", "completed_at"):
        if key in body:
            data[key] = body[key]
    if "status" in body:
        data["status"] = body["status"]
    if "conclusion" in body:
        data["conclusion"] = body["conclusion"]
        data["status"] = "completed"
    if data["status"] == "completed" and not data.get("completed_at"):
        data["completed_at"] = iso(time.time())
    output = body.get("output")
    if isinstance(output, dict):
        for key in ("title", "summary", "text"):
            if key in output:
                data["output"][key] = output[key]
        for note in output.get("annotations") or []:
            run.annotations.append(_annotation(call, repo, data["head_sha"], note))
        data["output"]["annotations_count"] = len(run.annotations)


def _pulls_for_sha(call: Call, repo: Repo, sha: str) -> list[dict[str, Any]]:
    found = []
    for pull in repo.pulls.values():
        if pull.head_sha != sha or pull.state != "open":
            continue
        head_repo = call.state.repo(pull.head_repo) or repo
        found.append(
            {
                "id": pull.id,
                "number": pull.number,
                "url": f"{call.api(repo)}/pulls/{pull.number}",
                "head": {
                    "ref": pull.head,
                    "sha": pull.head_sha,
                    "repo": {
                        "id": head_repo.id,
                        "url": call.api(head_repo),
                        "name": head_repo.name,
                    },
                },
                "base": {
                    "ref": pull.base,
                    "sha": pull.base_sha,
                    "repo": {"id": repo.id, "url": call.api(repo), "name": repo.name},
                },
            }
        )
    return found


def app_json(call: Call) -> dict[str, Any]:
    app = call.app
    return deep_merge(
        call.spec.skeleton("integration"),
        {
            "id": app.app_id,
            "slug": app.slug,
            "node_id": node_id("A_", app.app_id),
            "client_id": app.client_id,
            "owner": user_json(call, app.owner, "Organization"),
            "name": app.name,
            "description": "Release gate (fake GitHub App)",
            "external_url": f"{call.base_url}/apps/{app.slug}/home",
            "html_url": f"{call.base_url}/apps/{app.slug}",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "permissions": dict(DEFAULT_APP_PERMISSIONS),
            "events": ["check_run", "pull_request", "pull_request_review", "push"],
            "installations_count": len(call.state.installations),
        },
    )


@operation("checks/create")
def create_check_run(call: Call) -> Reply:
    repo = call.repo()
    body = call.body
    sha = repo.git.resolve(body["head_sha"])
    if sha is None or not sha.startswith(body["head_sha"].lower()):
        raise ApiError(422, f"No commit found for SHA: {body['head_sha']}")
    run_id = call.state.next_id()
    suite_id = stable_id(f"{repo.full_name}@{sha}")
    data = deep_merge(
        call.spec.skeleton("check-run"),
        {
            "id": run_id,
            "node_id": node_id("CR_", run_id),
            "head_sha": sha,
            "name": body["name"],
            "url": f"{call.api(repo)}/check-runs/{run_id}",
            "html_url": f"{call.html(repo)}/runs/{run_id}",
            "details_url": f"{call.base_url}/apps/{call.app.slug}",
            "external_id": "",
            "status": "queued",
            "conclusion": None,
            "started_at": iso(time.time()),
            "completed_at": None,
            "output": {
                "title": None,
                "summary": None,
                "text": None,
                "annotations_count": 0,
                "annotations_url": f"{call.api(repo)}/check-runs/{run_id}/annotations",
            },
            "check_suite": {"id": suite_id},
            "app": app_json(call),
            "pull_requests": _pulls_for_sha(call, repo, sha),
        },
    )
    run = CheckRun(run_id, repo.full_name, data)
    _apply_check_fields(call, run, repo, body)
    call.state.check_runs[run_id] = run
    repo.check_run_ids.append(run_id)
    return Reply(201, run.data)


def _check_run(call: Call, repo: Repo) -> CheckRun:
    run = call.state.check_runs.get(call.int_param("check_run_id"))
    if run is None or run.repo != repo.full_name:
        raise not_found()
    return run


@operation("checks/update")
def update_check_run(call: Call) -> Reply:
    repo = call.repo()
    run = _check_run(call, repo)
    _apply_check_fields(call, run, repo, call.body or {})
    return Reply(200, run.data)


@operation("checks/get")
def get_check_run(call: Call) -> Reply:
    repo = call.repo()
    return Reply(200, _check_run(call, repo).data)


@operation("checks/list-for-ref")
def list_check_runs(call: Call) -> Reply:
    repo = call.repo()
    sha = _resolve_or_404(repo, call.params["ref"])
    runs = [
        call.state.check_runs[i]
        for i in repo.check_run_ids
        if call.state.check_runs[i].data["head_sha"] == sha
    ]
    name = call.query.get("check_name")
    if name:
        runs = [r for r in runs if r.data["name"] == name]
    status = call.query.get("status")
    if status:
        runs = [r for r in runs if r.data["status"] == status]
    if call.query.get("filter", "latest") == "latest":
        newest: dict[str, CheckRun] = {}
        for run in runs:
            newest[run.data["name"]] = run
        runs = list(newest.values())
    runs.sort(key=lambda r: r.id, reverse=True)
    return paginate(call, [r.data for r in runs], wrap="check_runs")


# -- the App and its installations ---------------------------------------------------------------


@operation("apps/get-authenticated", auth="jwt")
def get_app(call: Call) -> Reply:
    return Reply(200, app_json(call))


def installation_json(call: Call, installation: Installation) -> dict[str, Any]:
    account_kind = "Organization"
    return deep_merge(
        call.spec.skeleton("installation"),
        {
            "id": installation.id,
            "account": user_json(call, installation.account, account_kind),
            "repository_selection": "all" if installation.repositories is None else "selected",
            "access_tokens_url": (
                f"{call.base_url}/app/installations/{installation.id}/access_tokens"
            ),
            "repositories_url": f"{call.base_url}/installation/repositories",
            "html_url": f"{call.base_url}/organizations/{installation.account}/settings/"
            f"installations/{installation.id}",
            "app_id": call.app.app_id,
            "app_slug": call.app.slug,
            "target_id": stable_id(installation.account),
            "target_type": account_kind,
            "permissions": dict(installation.permissions),
            "events": ["check_run", "pull_request", "pull_request_review", "push"],
            "created_at": iso(installation.created_at),
            "updated_at": iso(installation.created_at),
            "single_file_name": None,
            "suspended_by": None,
            "suspended_at": None,
        },
    )


@operation("apps/get-repo-installation", auth="jwt")
def get_repo_installation(call: Call) -> Reply:
    repo = call.repo(scoped=False)
    installation = call.state.installations[repo.installation_id]
    return Reply(200, installation_json(call, installation))


_TOKEN_ALPHABET = string.ascii_letters + string.digits


@operation("apps/create-installation-access-token", auth="jwt")
def create_access_token(call: Call) -> Reply:
    installation = call.state.installations.get(call.int_param("installation_id"))
    if installation is None:
        raise not_found()
    body = call.body or {}
    installed = {
        repo.name: repo
        for repo in call.state.repos.values()
        if repo.installation_id == installation.id
        and (installation.repositories is None or repo.full_name in installation.repositories)
    }
    selected: set[str] | None = None
    if "repositories" in body or "repository_ids" in body:
        by_id = {repo.id: name for name, repo in installed.items()}
        wanted = set(body.get("repositories") or [])
        wanted |= {by_id.get(i, f"#{i}") for i in body.get("repository_ids") or []}
        if not wanted <= set(installed):
            raise ApiError(
                422,
                "There is at least one repository that does not exist or is not accessible "
                "to the parent installation.",
            )
        selected = wanted
    elif installation.repositories is not None:
        selected = set(installed)
    permissions = dict(installation.permissions)
    if body.get("permissions"):
        for key, level in body["permissions"].items():
            granted = installation.permissions.get(key)
            if granted is None or (granted == "read" and level in {"write", "admin"}):
                raise ApiError(
                    422, "The permissions requested are not granted to this installation."
                )
        permissions = dict(body["permissions"])
    value = "ghs_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
    expires = time.time() + call.app.token_lifetime
    token = Token(value, installation.id, expires, selected, permissions)
    call.state.tokens[value] = token
    call.state.tokens_issued += 1
    answer: dict[str, Any] = {
        "token": value,
        "expires_at": iso(expires),
        "permissions": permissions,
        "repository_selection": "all" if selected is None else "selected",
    }
    if selected is not None:
        answer["repositories"] = [repo_json(call, installed[n], "repository") for n in selected]
    return Reply(201, answer)


# -- the signed-in user (user-to-server tokens) --------------------------------------------------


def readable_role(repo: Repo, login: str) -> str | None:
    """The role ``login`` explicitly holds on ``repo`` (its owner: admin), or None. GitHub's
    user-installation listings show only repositories a user can reach this way: not every
    public repository, and never one whose role is ``none``."""
    if login.lower() == repo.owner.lower():
        return "admin"
    role = repo.permissions.get(login.lower())
    return role if role not in (None, "none") else None


def _user_repos(call: Call, installation: Installation) -> list[Repo]:
    login = call.principal.user or ""
    return [
        repo
        for repo in sorted(call.state.repos.values(), key=lambda r: r.id)
        if repo.installation_id == installation.id
        and (installation.repositories is None or repo.full_name in installation.repositories)
        and readable_role(repo, login) is not None
    ]


@operation("users/get-authenticated", auth="user")
def get_authenticated_user(call: Call) -> Reply:
    login = call.principal.user or ""
    user = user_json(call, login)
    body = deep_merge(call.spec.skeleton("public-user"), {**user, "user_view_type": "public"})
    body.update(name=None, created_at=iso(0), updated_at=iso(0))
    return Reply(200, body)


@operation("apps/list-installations-for-authenticated-user", auth="user")
def list_user_installations(call: Call) -> Reply:
    """Installations of the App where the user can reach at least one repository."""
    login = (call.principal.user or "").lower()
    found = [
        installation
        for installation in sorted(call.state.installations.values(), key=lambda i: i.id)
        if installation.account.lower() == login or _user_repos(call, installation)
    ]
    return paginate(call, [installation_json(call, i) for i in found], wrap="installations")


@operation("apps/list-installation-repos-for-authenticated-user", auth="user")
def list_user_installation_repos(call: Call) -> Reply:
    installation = call.state.installations.get(call.int_param("installation_id"))
    login = call.principal.user or ""
    if installation is None:
        raise not_found()
    repos = _user_repos(call, installation)
    if not repos and installation.account.lower() != login.lower():
        raise not_found()
    items = []
    for repo in repos:
        level = _ROLE_ORDER.index(readable_role(repo, login) or "none")
        body = repo_json(call, repo, "repository")
        body["permissions"] = {
            "admin": level >= _ROLE_ORDER.index("admin"),
            "maintain": level >= _ROLE_ORDER.index("maintain"),
            "push": level >= _ROLE_ORDER.index("write"),
            "triage": level >= _ROLE_ORDER.index("triage"),
            "pull": level >= _ROLE_ORDER.index("read"),
        }
        items.append(body)
    reply = paginate(call, items, wrap="repositories")
    reply.body["repository_selection"] = "all" if installation.repositories is None else "selected"
    return reply


# -- webhook deliveries --------------------------------------------------------------------------


def delivery_item_json(call: Call, delivery: Delivery) -> dict[str, Any]:
    return deep_merge(
        call.spec.skeleton("hook-delivery-item"),
        {
            "id": delivery.id,
            "guid": delivery.guid,
            "delivered_at": delivery.delivered_at,
            "redelivery": delivery.redelivery,
            "duration": delivery.duration,
            "status": delivery.status,
            "status_code": delivery.status_code,
            "event": delivery.event,
            "action": delivery.action,
            "installation_id": delivery.installation_id,
            "repository_id": delivery.repository_id,
        },
    )


def _delivery(call: Call) -> Delivery:
    wanted = call.int_param("delivery_id")
    found = next((d for d in call.state.deliveries if d.id == wanted), None)
    if found is None:
        raise not_found()
    return found


@operation("apps/list-webhook-deliveries", auth="jwt")
def list_deliveries(call: Call) -> Reply:
    items = sorted(call.state.deliveries, key=lambda d: d.id, reverse=True)
    wanted = call.query.get("status")
    if wanted == "success":
        items = [d for d in items if 200 <= d.status_code < 300]
    elif wanted == "failure":
        items = [d for d in items if not 200 <= d.status_code < 300]
    cursor = call.query.get("cursor")
    if cursor:
        after = int(cursor.removeprefix("v1_"))
        items = [d for d in items if d.id < after]
    per_page = max(1, min(int(call.query.get("per_page", 30)), 100))
    page, rest = items[:per_page], items[per_page:]
    headers = {}
    if rest:
        next_url = _with_query(call.url, cursor=f"v1_{page[-1].id}", per_page=per_page)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return Reply(200, [delivery_item_json(call, d) for d in page], headers)


@operation("apps/get-webhook-delivery", auth="jwt")
def get_delivery(call: Call) -> Reply:
    delivery = _delivery(call)
    body = deep_merge(
        delivery_item_json(call, delivery),
        {
            "url": f"{call.base_url}/app/hook/deliveries/{delivery.id}",
            "request": {
                "headers": delivery.request_headers
                or {"X-GitHub-Event": delivery.event, "X-GitHub-Delivery": delivery.guid},
                "payload": delivery.payload,
            },
            "response": {"headers": {}, "payload": None},
        },
    )
    return Reply(200, body)


@operation("apps/redeliver-webhook-delivery", auth="jwt")
def redeliver(call: Call) -> Reply:
    original = _delivery(call)
    call.state.redelivery_attempts.append(original.id)
    code = call.app.redelivery_status_code
    call.state.deliveries.append(
        Delivery(
            id=call.state.next_id(),
            guid=original.guid,
            event=original.event,
            action=original.action,
            status_code=code,
            status="OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}",
            delivered_at=iso(time.time()),
            redelivery=True,
            installation_id=original.installation_id,
            repository_id=original.repository_id,
            payload=original.payload,
        )
    )
    return Reply(202, {})


# -- actions -------------------------------------------------------------------------------------


@operation("actions/create-workflow-dispatch")
def dispatch_workflow(call: Call) -> Reply:
    repo = call.repo()
    body = call.body
    ref = body["ref"]
    sha = repo.git.resolve(ref)
    if sha is None:
        raise ApiError(422, f"No ref found for: {ref}")
    workflow_id = call.params["workflow_id"]
    run = WorkflowRun(
        id=call.state.next_id(),
        repo=repo.full_name,
        workflow_id=workflow_id,
        head_branch=ref.removeprefix("refs/heads/"),
        head_sha=sha,
        inputs=dict(body.get("inputs") or {}),
        run_number=len(repo.workflow_run_ids) + 1,
    )
    call.state.workflow_runs[run.id] = run
    repo.workflow_run_ids.append(run.id)
    repo.dispatches.append({"workflow_id": workflow_id, "ref": ref, "inputs": run.inputs})
    if body.get("return_run_details"):
        return Reply(
            200,
            {
                "workflow_run_id": run.id,
                "run_url": f"{call.api(repo)}/actions/runs/{run.id}",
                "html_url": f"{call.html(repo)}/actions/runs/{run.id}",
            },
        )
    return Reply(204)


@operation("actions/get-workflow-run")
def get_workflow_run(call: Call) -> Reply:
    repo = call.repo()
    run = call.state.workflow_runs.get(call.int_param("run_id"))
    if run is None or run.repo != repo.full_name:
        raise not_found()
    info = repo.git.commit(run.head_sha)
    api = f"{call.api(repo)}/actions/runs/{run.id}"
    workflow_number = (
        int(run.workflow_id) if run.workflow_id.isdigit() else stable_id(run.workflow_id)
    )
    path = run.workflow_id if not run.workflow_id.isdigit() else f"workflow-{run.workflow_id}.yml"
    person = {"name": info.author_name, "email": info.author_email}
    body = deep_merge(
        call.spec.skeleton("workflow-run"),
        {
            "id": run.id,
            "name": path.rsplit("/", 1)[-1],
            "node_id": node_id("WFR_", run.id),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": f".github/workflows/{path}",
            "run_number": run.run_number,
            "run_attempt": 1,
            "display_title": info.message.splitlines()[0] if info.message else "",
            "event": run.event,
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": workflow_number,
            "url": api,
            "html_url": f"{call.html(repo)}/actions/runs/{run.id}",
            "created_at": iso(run.created_at),
            "updated_at": iso(run.updated_at),
            "run_started_at": iso(run.created_at),
            "jobs_url": f"{api}/jobs",
            "logs_url": f"{api}/logs",
            "check_suite_url": f"{call.api(repo)}/check-suites/{stable_id(str(run.id))}",
            "artifacts_url": f"{api}/artifacts",
            "cancel_url": f"{api}/cancel",
            "rerun_url": f"{api}/rerun",
            "workflow_url": f"{call.api(repo)}/actions/workflows/{workflow_number}",
            "head_commit": {
                "id": info.sha,
                "tree_id": info.tree,
                "message": info.message,
                "timestamp": _git_date(info.committer_date),
                "author": person,
                "committer": {"name": info.committer_name, "email": info.committer_email},
            },
            "repository": repo_json(call, repo, "minimal-repository"),
            "head_repository": repo_json(call, repo, "minimal-repository"),
            "pull_requests": [],
        },
    )
    return Reply(200, body)


# -- rate limits ---------------------------------------------------------------------------------


@operation("rate-limit/get", auth="optional")
def get_rate_limit(call: Call) -> Reply:
    limit, remaining, reset, used = rate_numbers(call.state, call.principal)
    core = {"limit": limit, "remaining": remaining, "reset": reset, "used": used}
    search = {"limit": 30, "remaining": 30, "reset": reset, "used": 0}
    body = deep_merge(
        call.spec.skeleton("rate-limit-overview"),
        {
            "resources": {"core": core, "search": search, "graphql": dict(core)},
            "rate": core,
        },
    )
    return Reply(200, body)


RATE_LIMITS = {"installation": 5000, "app": 5000, "user": 5000, "anonymous": 60}
RATE_WINDOW_SECONDS = 3600


def rate_numbers(state: FakeState, principal: Principal) -> tuple[int, int, int, int]:
    """(limit, remaining, reset epoch, used) of ``principal``'s current hourly window."""
    now = time.time()
    if now - state.rate_window_start >= RATE_WINDOW_SECONDS:
        state.rate_window_start = now
        state.rate_used.clear()
    limit = RATE_LIMITS[principal.kind]
    used = state.rate_used.get(principal.rate_key, 0)
    reset = int(state.rate_window_start + RATE_WINDOW_SECONDS)
    return limit, max(0, limit - used), reset, used
