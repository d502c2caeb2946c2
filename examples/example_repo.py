"""What the example builders share: text edits, commits, cases and the git plumbing.

Each example target keeps its service as it stands on `main` under `examples/<target>/`.
Its build script lists main's history as commits; undoing them from that tree, newest
first, gives the first commit, and replaying them gives main. Then one builder branch per
case, each a single commit of exact edits, so every diff is small and readable. Fixed
identities and dates make the SHAs the same on every machine.

examples/ is data, not a package: each build script loads this file by its path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SKIP = {"__pycache__", ".venv", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Edit:
    """Replace the one occurrence of `old` in `path` with `new` (or back, to revert)."""

    path: str
    old: str
    new: str

    def apply(self, root: Path) -> None:
        _replace_once(root / self.path, self.old, self.new)

    def revert(self, root: Path) -> None:
        _replace_once(root / self.path, self.new, self.old)


@dataclass(frozen=True)
class AddFile:
    """Create `path` with `text`; reverting removes it.

    In main's history `text` may be None: the file is as the example's tree holds it (the
    replay restores it from there), and reverting only checks it is there to remove.
    """

    path: str
    text: str | None = None

    def apply(self, root: Path) -> None:
        target = root / self.path
        if self.text is None:
            raise ValueError(f"{self.path}: a builder's new file needs its text")
        if target.exists():
            raise ValueError(f"{target}: the file to add exists already")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.text, encoding="utf-8")

    def revert(self, root: Path) -> None:
        target = root / self.path
        if not target.is_file():
            raise ValueError(f"{target}: the added file is not there to remove")
        if self.text is not None and target.read_text(encoding="utf-8") != self.text:
            raise ValueError(f"{target}: the added file differs from its text")
        target.unlink()


Change = Edit | AddFile


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    count = text.count(old)
    if count != 1:
        raise ValueError(
            f"{path}: expected the edit's text exactly once, found it {count} times: {old!r}"
        )
    path.write_text(text.replace(old, new), encoding="utf-8")


@dataclass(frozen=True)
class Commit:
    message: str
    date: str
    edits: tuple[Change, ...] = ()


@dataclass(frozen=True)
class Branch:
    """A builder branch: one commit on top of `start` (main, or an older commit of it when
    the builder's work began before main moved on)."""

    name: str
    commit: Commit
    start: str = "main"


@dataclass
class Case:
    """One builder branch and what Gatekeeper should say about merging it into `base`."""

    name: str
    title: str
    base: str
    head: str
    expected_decision: str
    expected_risk: set[str] | None  # None: any risk level is acceptable
    bug_id: str
    description: str
    evidence: tuple[str, ...] = ()  # text the verdict's evidence should show
    why: str = ""  # one line: why a careful maintainer decides expected_decision


def build_repository(
    dest: Path,
    source: Path,
    first: Commit,
    history: Sequence[Commit],
    branches: Sequence[Branch],
) -> None:
    """Create the repository at `dest` (absent or empty): `first` is `source` with every
    commit of `history` undone, main is `first` plus `history`, and each branch is its one
    commit on its start."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    _copy_tree(source, dest)
    states: list[dict[str, bytes]] = []
    for commit in reversed(history):
        states.append(_snapshot(dest))
        for edit in reversed(commit.edits):
            edit.revert(dest)

    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.name", "Gatekeeper Demo")
    git(dest, "config", "user.email", "demo@gatekeeper.invalid")
    _commit(dest, first)
    for commit, state in zip(history, reversed(states), strict=True):
        _restore(dest, state)
        _commit(dest, commit)
    for branch in branches:
        git(dest, "checkout", "-q", "-b", branch.name, branch.start)
        for edit in branch.commit.edits:
            edit.apply(dest)
        _commit(dest, branch.commit)
        git(dest, "checkout", "-q", "main")


def _copy_tree(source: Path, dest: Path) -> None:
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or _SKIP & set(relative.parts) or path.suffix == ".pyc":
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in _files(root)}


def _restore(root: Path, state: dict[str, bytes]) -> None:
    for path in _files(root):
        if path.relative_to(root).as_posix() not in state:
            path.unlink()
    for relative, data in state.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _commit(repo: Path, commit: Commit) -> None:
    git(repo, "add", "-A")
    git(
        repo,
        "commit",
        "-q",
        "-m",
        commit.message,
        env={"GIT_AUTHOR_DATE": commit.date, "GIT_COMMITTER_DATE": commit.date},
    )


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    # The caller's global and system git config (hooks, signing, templates) must not change
    # the commits: the SHAs are part of the examples' contract.
    full_env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**full_env, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout


def describe(repo: Path, cases: Sequence[Case]) -> list[str]:
    """One line per case: name, branch, short SHA and the expected decision, in columns."""
    name_width = max(len(case.name) for case in cases) + 1
    head_width = max(len(case.head) for case in cases) + 1
    lines = []
    for case in cases:
        sha = git(repo, "rev-parse", "--short", case.head).strip()
        risk = "/".join(sorted(case.expected_risk)) if case.expected_risk else "any"
        lines.append(
            f"{case.name:<{name_width}} {case.head:<{head_width}} {sha}  "
            f"expect {case.expected_decision} (risk {risk}): {case.title}"
        )
    return lines


def main(
    argv: list[str] | None, doc: str, program: str, build: Callable[[Path], list[Case]]
) -> int:
    """A build script's command line: build the repository at the one argument, list the
    cases."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory for the repository (absent or empty)")
    args = parser.parse_args(argv)
    try:
        cases = build(args.dest)
    except (FileExistsError, RuntimeError, ValueError) as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    print(f"demo repository: {args.dest.resolve()}")
    for line in describe(args.dest, cases):
        print(line)
    return 0
