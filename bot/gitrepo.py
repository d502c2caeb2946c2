"""Git operations on the repository under validation, always in a scratch clone.

The user's repository is only read: refs are resolved there, then a `--shared` clone in a
temp dir does the merge and the checkouts, so a failed or interrupted run leaves nothing
behind in it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


class GitError(Exception):
    """A git command failed for a reason the user must fix (unknown ref, not a repository)."""


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=_GIT_ENV, check=False
    )
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc


# A fixed identity and no user config: merges must not depend on who runs the gate.
_GIT_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "gatekeeper",
    "GIT_AUTHOR_EMAIL": "gatekeeper@localhost",
    "GIT_COMMITTER_NAME": "gatekeeper",
    "GIT_COMMITTER_EMAIL": "gatekeeper@localhost",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def resolve(repo: Path, ref: str) -> str:
    """The commit `ref` names in `repo`, or a GitError that says which ref and where."""
    if (
        not (repo / ".git").exists()
        and _git(repo, "rev-parse", "--git-dir", check=False).returncode
    ):
        raise GitError(f"{repo} is not a git repository")
    proc = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if proc.returncode != 0:
        raise GitError(f"unknown ref '{ref}' in {repo}: no commit by that name")
    return proc.stdout.strip()


@dataclass
class ChainLink:
    """A commit of a first-parent chain: how a merge queue stacks a group's pull requests."""

    sha: str
    parents: list[str]
    subject: str


def first_parents(repo: Path, base: str, head: str) -> list[ChainLink]:
    """The commits from `base` (excluded) to `head` along first parents, oldest first: each is
    one step of a merge queue's group (a merge commit whose second parent is the pull
    request's head, or a squashed or rebased pull request's commit)."""
    out = _git(
        repo, "log", "--first-parent", "--reverse", "--format=%H%x1f%P%x1f%s", f"{base}..{head}"
    ).stdout
    links = []
    for line in out.splitlines():
        if line:
            sha, parents, subject = line.split("\x1f", 2)
            links.append(ChainLink(sha, parents.split(), subject))
    return links


def read_file(repo: Path, sha: str, path: str, limit: int = 1 << 20) -> str | None:
    """The file at `path` in `sha` (None if there is none), at most `limit` + 1 bytes of it:
    the caller's own size check then refuses it without this reading a giant blob whole.
    Bytes that are not UTF-8 are kept as surrogates, for the caller to point at."""
    with subprocess.Popen(
        ["git", "cat-file", "blob", f"{sha}:{path}"],
        cwd=repo,
        env=_GIT_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        data = proc.stdout.read(limit + 1)
        if len(data) > limit:
            proc.kill()  # the rest is never read
        found = proc.wait() == 0 or len(data) > limit
    return data.decode("utf-8", "surrogateescape") if found else None


def extract(repo: Path, sha: str, dest: Path) -> None:
    """Write the tree of `sha` into `dest` (no .git): files read from a commit, not a checkout."""
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", sha],
        capture_output=True,
        env=_GIT_ENV,
        check=False,
    )
    if archive.returncode != 0:
        raise GitError(f"git archive {sha} failed: {archive.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar:
            _extract_member(tar, member, dest)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Directories, files and the symlinks that stay inside the tree; nothing else.

    Written by hand rather than with `extractall(filter="data")`, which Python 3.11 gained only
    in 3.11.4 and which fails the whole extraction on one absolute link: a base branch may
    hold such links (`docs -> /srv/docs`), and they are skipped here, never followed."""
    target = dest / member.name
    relative = Path(member.name)
    if relative.is_absolute() or ".." in relative.parts:
        return
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
    elif member.isfile():
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has contents
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        target.chmod(0o755 if member.mode & 0o111 else 0o644)
    elif member.issym() and _link_stays_inside(relative, member.linkname):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(member.linkname)


def _link_stays_inside(link: Path, pointee: str) -> bool:
    if os.path.isabs(pointee):
        return False
    resolved = os.path.normpath(os.path.join(link.parent, pointee))
    return resolved != ".." and not resolved.startswith("../")


@dataclass
class Commit:
    sha: str
    subject: str
    author: str
    date: str


@dataclass
class ChangedFile:
    status: str  # A, M, D, R...
    path: str
    added: int | None
    deleted: int | None


@dataclass
class Merge:
    ok: bool
    sha: str | None
    conflicts: list[str]
    at: int | None = None
    """`merge_sequence`: the index of the head that did not merge onto those before it."""
    steps: list[str] = field(default_factory=list)
    """`merge_sequence`: the merge after each head (the last is `sha`), for as far as it got."""


class Scratch:
    """A temp clone sharing the repository's objects; checkouts live under it."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.root = Path(tempfile.mkdtemp(prefix="gatekeeper-git-"))
        self.clone = self.root / "clone"
        try:
            _git(self.root, "clone", "--quiet", "--shared", "--no-checkout", str(repo), "clone")
        except BaseException:
            self.close()
            raise

    def merge(self, base: str, head: str) -> Merge:
        """Merge head into base without touching a work tree (git merge-tree)."""
        proc = _git(
            self.clone,
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            base,
            head,
            check=False,
        )
        lines = proc.stdout.splitlines()
        if proc.returncode == 1:
            return Merge(False, None, sorted({line for line in lines[1:] if line}))
        if proc.returncode != 0:
            raise GitError(f"git merge-tree failed: {proc.stderr.strip()}")
        message = f"gatekeeper: merge {head[:12]} into {base[:12]}"
        commit = _git(self.clone, "commit-tree", lines[0], "-p", base, "-p", head, "-m", message)
        return Merge(True, commit.stdout.strip(), [])

    def merge_sequence(self, base: str, heads: list[str]) -> Merge:
        """Merge `heads` one after the other onto `base`, as a merge queue does: each onto the
        merge of those before it. On a conflict, `at` names the head that did not merge (the
        pair is that head and the ones before it); the result of a clean run is the last merge
        commit, whose first-parent chain has one merge per head (`steps`, in order)."""
        steps: list[str] = []
        for index, head in enumerate(heads):
            merged = self.merge(steps[-1] if steps else base, head)
            if not merged.ok or merged.sha is None:
                return Merge(False, None, merged.conflicts, at=index, steps=steps)
            steps.append(merged.sha)
        return Merge(True, steps[-1] if steps else base, [], steps=steps)

    def private_dirs(self) -> tuple[Path, Path]:
        """A HOME and a TMPDIR for the change's processes, removed with the clone."""
        home, tmp = self.root / "home", self.root / "tmp"
        for path in (home, tmp):
            path.mkdir(mode=0o700, exist_ok=True)
        return home, tmp

    def checkout(self, sha: str, name: str) -> Path:
        path = self.root / name
        _git(self.clone, "worktree", "add", "--quiet", "--detach", str(path), sha)
        return path

    def commits(self, base: str, head: str) -> list[Commit]:
        out = _git(self.clone, "log", "--format=%H%x1f%s%x1f%an%x1f%aI", f"{base}..{head}").stdout
        return [Commit(*line.split("\x1f")) for line in out.splitlines() if line]

    def changed_files(self, base: str, merge: str) -> list[ChangedFile]:
        names = _git(self.clone, "diff", "--name-status", "--no-renames", base, merge).stdout
        stats = _git(self.clone, "diff", "--numstat", "--no-renames", base, merge).stdout
        counts: dict[str, tuple[int | None, int | None]] = {}
        for line in stats.splitlines():
            added, deleted, path = line.split("\t", 2)
            counts[path] = (
                int(added) if added.isdigit() else None,
                int(deleted) if deleted.isdigit() else None,
            )
        files = []
        for line in names.splitlines():
            status, path = line.split("\t", 1)
            files.append(ChangedFile(status, path, *counts.get(path, (None, None))))
        return files

    def added_lines(self, base: str, merge: str) -> dict[str, set[int]]:
        """Line numbers (in the merge result) each changed file gained."""
        out = _git(self.clone, "diff", "-U0", "--no-renames", base, merge).stdout
        added: dict[str, set[int]] = {}
        path = None
        for line in out.splitlines():
            if line.startswith("+++ "):
                path = line[6:] if line.startswith("+++ b/") else None
            elif line.startswith("@@") and path is not None:
                start, _, count = line.split("+", 1)[1].split(" ", 1)[0].partition(",")
                first, length = int(start), int(count) if count else 1
                added.setdefault(path, set()).update(range(first, first + length))
        return added

    def references(self, sha: str, word: str) -> list[tuple[str, int, str]]:
        """(path, line, text) of every whole-word occurrence of `word` in the tree of `sha`."""
        proc = _git(self.clone, "grep", "-n", "-I", "-w", "-F", word, sha, check=False)
        out = []
        for hit in proc.stdout.splitlines():
            _sha, path, line, text = hit.split(":", 3)
            out.append((path, int(line), text))
        return out

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
