"""What the fake GitHub knows: repositories (backed by real local git repositories), pulls,
issues, statuses, check runs, tokens, deliveries, and the records of every request.

The state is plain data guarded by one re-entrant lock: the server answers from uvicorn's
worker threads while the test thread registers repositories and reads the records, and the
fake is a test double, not a throughput target, so one lock keeps every answer consistent.
Git facts (shas, files, diffs, commits) are never invented: they are read from the local
repositories with the git command line, so what the bot reads over the API and what it clones
over HTTP always agree.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fixed identity for the commits the fake makes itself (refs/pull/N/merge), so nothing depends
# on the machine's git configuration.
_FAKE_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "GitHub",
    "GIT_AUTHOR_EMAIL": "noreply@github.com",
    "GIT_COMMITTER_NAME": "GitHub",
    "GIT_COMMITTER_EMAIL": "noreply@github.com",
}


# What the fake App is granted: what a release gate needs (read code, write checks/statuses/
# comments/reviews/labels, dispatch workflows).
DEFAULT_APP_PERMISSIONS = {
    "actions": "write",
    "checks": "write",
    "contents": "read",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
    "statuses": "write",
}


class GitError(RuntimeError):
    """A git command failed; carries its stderr so a broken fixture explains itself."""


@dataclass(frozen=True)
class CommitInfo:
    """The parts of a commit that GitHub's commit objects expose."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_date: str
    committer_name: str
    committer_email: str
    committer_date: str
    message: str


@dataclass(frozen=True)
class FileChange:
    """One entry of a three-dot diff (what GitHub shows on a pull request's Files tab)."""

    filename: str
    status: str
    additions: int
    deletions: int
    blob_sha: str
    previous_filename: str | None
    patch: str | None


class LocalGit:
    """Read-only questions (plus refs/pull/*) asked of one local git repository."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        self.git_dir = Path(self.run("rev-parse", "--absolute-git-dir").strip())

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        completed = subprocess.run(
            ["git", "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
            check=False,
        )
        if check and completed.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed in {self.path}: {completed.stderr}")
        return completed.stdout

    def run_bytes(self, *args: str) -> bytes | None:
        completed = subprocess.run(
            ["git", "-C", str(self.path), *args], capture_output=True, check=False
        )
        return completed.stdout if completed.returncode == 0 else None

    def resolve(self, ref: str) -> str | None:
        """The commit sha ``ref`` names (branch, tag, sha, ``refs/...``), or None."""
        if not ref or ref.startswith("-"):
            return None
        out = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return out.strip() or None

    def full_ref(self, ref: str) -> tuple[str, str] | None:
        """``heads/main`` -> (``refs/heads/main``, sha) when that exact ref exists.

        Like GitHub's ``git/ref/{ref}``, ``ref`` is given without ``refs/``: a client sending
        ``refs/heads/main`` asks for ``refs/refs/heads/main`` and gets a 404, as on GitHub.
        """
        name = f"refs/{ref}"
        out = self.run("show-ref", "--verify", "--", name, check=False).strip()
        if not out:
            return None
        sha, _ = out.split(" ", 1)
        return name, sha

    def object_type(self, sha: str, path: str) -> str | None:
        out = self.run("cat-file", "-t", f"{sha}:{path}", check=False).strip()
        return out or None

    def object_sha(self, sha: str, path: str) -> str:
        return self.run("rev-parse", f"{sha}:{path}").strip()

    def read_blob(self, sha: str, path: str) -> bytes | None:
        return self.run_bytes("cat-file", "blob", f"{sha}:{path}")

    def list_tree(self, sha: str, path: str) -> list[tuple[str, str, str, int, str]]:
        """(mode, type, sha, size, name) for each entry of the directory ``path`` at ``sha``."""
        spec = f"{sha}:{path}" if path else sha
        entries = []
        for line in self.run("ls-tree", "-l", spec).splitlines():
            meta, name = line.split("\t", 1)
            mode, kind, obj, size = meta.split()
            entries.append((mode, kind, obj, int(size) if size.isdigit() else 0, name))
        return entries

    def commit(self, sha: str) -> CommitInfo:
        fmt = "%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
        fields = self.run("show", "-s", f"--format={fmt}", sha).split("\x00")
        return CommitInfo(
            sha=fields[0],
            tree=fields[1],
            parents=tuple(fields[2].split()),
            author_name=fields[3],
            author_email=fields[4],
            author_date=fields[5],
            committer_name=fields[6],
            committer_email=fields[7],
            committer_date=fields[8],
            message=fields[9].rstrip("\n"),
        )

    def commits_between(self, base: str, head: str) -> list[str]:
        """Commits reachable from ``head`` but not ``base``, oldest first (GitHub's order)."""
        return self.run("rev-list", "--reverse", f"{base}..{head}").split()

    def merge_base(self, base: str, head: str) -> str | None:
        return self.run("merge-base", base, head, check=False).strip() or None

    def changes(self, base: str, head: str) -> list[FileChange]:
        """The three-dot diff ``base...head`` with per-file line counts and patches."""
        merge_base = self.merge_base(base, head) or base
        numstat: dict[str, tuple[int, int]] = {}
        for line in self.run("diff", "--numstat", "-M", merge_base, head).splitlines():
            added, deleted, name = line.split("\t", 2)
            if " => " in name:  # renames: "{old => new}" forms; key by the new path
                name = _rename_target(name)
            numstat[name] = (
                int(added) if added.isdigit() else 0,
                int(deleted) if deleted.isdigit() else 0,
            )
        changes = []
        raw = self.run("diff", "--name-status", "-z", "-M", merge_base, head).split("\x00")
        fields = iter(item for item in raw if item)
        for code in fields:
            previous = None
            if code[0] in "RC":
                previous = next(fields)
            filename = next(fields)
            status = _STATUS_NAMES.get(code[0], "changed")
            added, deleted = numstat.get(filename, (0, 0))
            patch_text = self.run(
                "diff",
                "-M",
                merge_base,
                head,
                "--",
                *([previous, filename] if previous else [filename]),
            )
            hunk_start = patch_text.find("\n@@")
            patch = patch_text[hunk_start + 1 :].rstrip("\n") if hunk_start >= 0 else None
            blob = (
                self.object_sha(head, filename)
                if status != "removed"
                else self.object_sha(merge_base, filename)
            )
            changes.append(FileChange(filename, status, added, deleted, blob, previous, patch))
        return changes

    def fetch_into(self, source: Path, source_ref: str, target_ref: str) -> None:
        """Copy ``source_ref`` of another (or this) repository to ``target_ref`` here."""
        self.run("fetch", "--quiet", "--no-tags", str(source), f"+{source_ref}:{target_ref}")

    def test_merge(self, base: str, head: str, message: str) -> str | None:
        """The merge commit GitHub would offer as refs/pull/N/merge, or None on conflicts."""
        completed = subprocess.run(
            ["git", "-C", str(self.path), "merge-tree", "--write-tree", base, head],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:  # 1: conflicts; anything else: no merge to offer
            return None
        tree = completed.stdout.splitlines()[0].strip()
        return self.run(
            "commit-tree", tree, "-p", base, "-p", head, "-m", message, env=_FAKE_GIT_IDENTITY
        ).strip()

    def update_ref(self, ref: str, sha: str | None) -> None:
        if sha is None:
            self.run("update-ref", "-d", ref, check=False)
        else:
            self.run("update-ref", ref, sha)


_STATUS_NAMES = {
    "A": "added",
    "D": "removed",
    "M": "modified",
    "R": "renamed",
    "C": "copied",
    "T": "changed",
}


def _rename_target(name: str) -> str:
    if "{" in name:
        prefix, rest = name.split("{", 1)
        inner, suffix = rest.split("}", 1)
        new = inner.split(" => ", 1)[1]
        return (prefix + new + suffix).replace("//", "/")
    return name.split(" => ", 1)[1]


@dataclass
class Installation:
    """One installation of the App; ``repositories`` None means every registered repository."""

    id: int
    account: str
    repositories: set[str] | None = None
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_APP_PERMISSIONS))
    created_at: float = field(default_factory=time.time)


@dataclass
class Token:
    """An installation access token (``ghs_...``) and what it may reach."""

    value: str
    installation_id: int
    expires_at: float
    repositories: set[str] | None
    permissions: dict[str, str]

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


@dataclass
class UserToken:
    """A user-to-server token (``ghu_...``) the App's OAuth sign-in gave ``login``."""

    value: str
    login: str
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


@dataclass
class OAuthCode:
    """An authorization code of the web flow: single use, ten minutes, for one redirect."""

    code: str
    login: str
    redirect_uri: str | None
    expires_at: float


@dataclass
class Issue:
    """An issue or pull request number: comments and labels live here for both."""

    number: int
    title: str
    user: str
    labels: list[str] = field(default_factory=list)
    comment_ids: list[int] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)


@dataclass
class Pull:
    """A pull request registered by the test; shas are re-read from git on every answer."""

    number: int
    id: int
    base: str
    head: str
    head_repo: str
    user: str
    title: str
    body: str | None
    state: str = "open"
    draft: bool = False
    merged: bool = False
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    closed_at: float | None = None
    head_sha: str = ""
    base_sha: str = ""
    merge_commit_sha: str | None = None
    review_ids: list[int] = field(default_factory=list)


@dataclass
class Repo:
    """A repository served by the fake, backed by a local git repository."""

    full_name: str
    id: int
    git: LocalGit
    default_branch: str
    private: bool
    installation_id: int
    owner_type: str = "Organization"
    created_at: float = field(default_factory=time.time)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    issues: dict[int, Issue] = field(default_factory=dict)
    pulls: dict[int, Pull] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    check_run_ids: list[int] = field(default_factory=list)
    workflow_run_ids: list[int] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def owner(self) -> str:
        return self.full_name.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/", 1)[1]


@dataclass
class CheckRun:
    """A check run: its JSON as GitHub renders it, plus every annotation appended so far."""

    id: int
    repo: str
    data: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Delivery:
    """A webhook delivery of the App's hook, as ``GET /app/hook/deliveries`` lists it."""

    id: int
    guid: str
    event: str
    action: str | None
    status_code: int
    status: str
    delivered_at: str
    redelivery: bool = False
    duration: float = 0.12
    installation_id: int | None = None
    repository_id: int | None = None
    request_headers: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] | None = None


@dataclass
class WorkflowRun:
    """A workflow run in a repository (created by a dispatch or by the test)."""

    id: int
    repo: str
    workflow_id: str
    head_branch: str
    head_sha: str
    status: str = "queued"
    conclusion: str | None = None
    event: str = "workflow_dispatch"
    inputs: dict[str, Any] = field(default_factory=dict)
    run_number: int = 1
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class RecordedRequest:
    """One request as the fake received it (for assertions on what the bot sent)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    operation_id: str | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class Violation:
    """A request that GitHub would refuse (spec or documented limit) and the reasons why."""

    method: str
    path: str
    operation_id: str | None
    reasons: list[str]

    def __str__(self) -> str:
        op = self.operation_id or "no operation"
        return f"{self.method} {self.path} [{op}]: " + "; ".join(self.reasons)


class FakeState:
    """Everything the fake remembers; hold ``lock`` while reading or changing it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._ids = itertools.count(1001)
        self.repos: dict[str, Repo] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, Token] = {}
        self.user_tokens: dict[str, UserToken] = {}
        self.oauth_codes: dict[str, OAuthCode] = {}
        self.tokens_issued = 0
        self.check_runs: dict[int, CheckRun] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.comment_issue: dict[int, tuple[str, int]] = {}
        self.reviews: dict[int, dict[str, Any]] = {}
        self.deliveries: list[Delivery] = []
        self.redelivery_attempts: list[int] = []
        self.workflow_runs: dict[int, WorkflowRun] = {}
        self.rate_used: dict[str, int] = {}
        self.rate_window_start = time.time()
        self.requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.response_violations: list[Violation] = []

    def next_id(self) -> int:
        """Ids are unique across kinds, like GitHub's (which helps catch id mix-ups)."""
        with self.lock:
            return next(self._ids)

    def repo(self, full_name: str) -> Repo | None:
        """Case-insensitive lookup, as GitHub resolves ``Octo/Demo`` to ``octo/demo``."""
        with self.lock:
            if full_name in self.repos:
                return self.repos[full_name]
            lowered = full_name.lower()
            return next((r for n, r in self.repos.items() if n.lower() == lowered), None)
