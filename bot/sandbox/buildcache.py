"""Builds reused across runs and sides: a virtualenv is rebuilt only when what it is made of
changes.

The key is the content of the files the policy names (`build.cache_key`: requirements.txt,
uv.lock, …) with the build commands and the interpreter; the entry is a copy of
`build.cache_paths` (e.g. `.venv`) taken after a successful build. Only builds of the base
branch are stored: the base is reviewed code, while a pull request's build could plant a file
in its output (a `sitecustomize.py`, a patched package) that a later run — of another pull
request, or of the base itself — would then execute. Either side reuses an entry whose key
matches; a change that edits a key file builds itself, and nothing of it is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import platformdirs

from bot.policy.model import Build

CACHE_ENV = "GATEKEEPER_BUILD_CACHE"
KEEP = 8  # entries; the oldest go first


def default_root() -> Path:
    """Under the invoking user's cache dir: root's home is hidden from the change's code."""
    configured = os.environ.get(CACHE_ENV)
    return (
        Path(configured)
        if configured
        else Path(platformdirs.user_cache_dir("gatekeeper")) / "builds"
    )


class BuildCache:
    def __init__(self, build: Build, root: Path | None = None):
        self.build = build
        self.root = root or default_root()

    @property
    def enabled(self) -> bool:
        return bool(self.build.cache_key and self.build.cache_paths)

    def key(self, checkout: Path) -> str:
        digest = hashlib.sha256()
        digest.update(
            json.dumps([self.build.commands, self.build.cache_paths, sys.version]).encode()
        )
        for name in self.build.cache_key:
            path = checkout / name
            digest.update(name.encode() + b"\0")
            # A key file that is a link could point anywhere on the host: it keys nothing.
            if path.is_file() and not path.is_symlink():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            else:
                digest.update(b"<absent>")
        return digest.hexdigest()

    def restore(self, key: str, checkout: Path) -> bool:
        """Link a stored entry into `checkout` (hard links, copies across file systems);
        False when there is none. The files stay ours and read-only to the run account: it
        must not be able to write through a link into the stored build, so the caller must
        not hand them over."""
        entry = self.root / key
        if not (entry / "complete").is_file():
            return False
        for name in self.build.cache_paths:
            source = entry / "paths" / name
            if source.exists() or source.is_symlink():
                target = checkout / name
                if target.is_symlink() or target.is_file():
                    target.unlink()
                elif target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy(source, target, link=True)
        os.utime(entry)  # recently used: pruned last
        return True

    def store(self, key: str, checkout: Path) -> None:
        """Keep `checkout`'s cache paths under `key` (a base build's only; see the module)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = self.root / key
        if (entry / "complete").is_file():
            return
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root))
        try:
            for name in self.build.cache_paths:
                source = checkout / name
                if source.exists() or source.is_symlink():
                    target = staging / "paths" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _copy(source, target)
            (staging / "complete").write_text(key)
            shutil.rmtree(entry, ignore_errors=True)
            staging.rename(entry)  # whole or not at all: a reader never sees half an entry
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._prune()

    def _prune(self) -> None:
        entries = sorted(
            (p for p in self.root.iterdir() if not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in entries[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)


def _copy(source: Path, target: Path, link: bool = False) -> None:
    """cp keeps symbolic links as links and modes as they were; owners become ours (never
    the run account's, which must not be able to change a stored build). `link`: hard links
    where the file system allows (a restore in milliseconds), else copies."""
    command = ["cp", "-R", "--no-dereference", "--preserve=mode,timestamps,links"]
    if link:
        done = subprocess.run([*command, "--link", str(source), str(target)], capture_output=True)
        if done.returncode == 0:
            return
        shutil.rmtree(target, ignore_errors=True)
    subprocess.run([*command, str(source), str(target)], check=True, capture_output=True)
