"""The build cache: keyed by the named files' content, whole entries only, links kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.policy.model import Build
from bot.sandbox.buildcache import KEEP, BuildCache

BUILD = Build(
    commands=["make venv"], cache_key=["requirements.txt"], cache_paths=[".venv", "dist/app"]
)


def checkout(root: Path, requirements: str) -> Path:
    root.mkdir(parents=True)
    (root / "requirements.txt").write_text(requirements)
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "tool").write_text("#!/bin/sh\necho hi\n")
    (venv / "tool").chmod(0o755)
    (venv / "python").symlink_to("/usr/bin/python3")
    return root


def test_a_stored_build_is_restored_where_the_key_files_match(tmp_path):
    cache = BuildCache(BUILD, tmp_path / "cache")
    base = checkout(tmp_path / "base", "fastapi==1\n")
    key = cache.key(base)
    cache.store(key, base)
    head = tmp_path / "head"
    head.mkdir()
    (head / "requirements.txt").write_text("fastapi==1\n")
    assert cache.key(head) == key
    assert cache.restore(key, head)
    tool = head / ".venv" / "bin" / "tool"
    assert tool.read_text() == "#!/bin/sh\necho hi\n" and os.access(tool, os.X_OK)
    assert os.readlink(head / ".venv" / "bin" / "python") == "/usr/bin/python3"
    assert not (head / "dist").exists()  # a cache path the build did not make stays absent
    # Linked, not copied: the stored file is the restored one (so it must stay ours).
    stored = cache.root / key / "paths" / ".venv" / "bin" / "tool"
    assert tool.stat().st_ino == stored.stat().st_ino
    assert tool.stat().st_uid == os.getuid()


def test_the_key_follows_content_commands_and_missing_files(tmp_path):
    cache = BuildCache(BUILD, tmp_path / "cache")
    one = checkout(tmp_path / "one", "fastapi==1\n")
    two = checkout(tmp_path / "two", "fastapi==2\n")
    assert cache.key(one) != cache.key(two)
    other = BuildCache(Build(**{**BUILD.model_dump(), "commands": ["make other"]}), cache.root)
    assert other.key(one) != cache.key(one)
    (one / "requirements.txt").unlink()
    (one / "requirements.txt").symlink_to(two / "requirements.txt")
    assert cache.key(one) not in {cache.key(two), cache.key(checkout(tmp_path / "x", ""))}


def test_nothing_is_restored_without_a_complete_entry(tmp_path):
    cache = BuildCache(BUILD, tmp_path / "cache")
    base = checkout(tmp_path / "base", "a\n")
    key = cache.key(base)
    assert not cache.restore(key, tmp_path)
    (cache.root / key / "paths").mkdir(parents=True)  # half an entry, as a crash leaves it
    assert not cache.restore(key, tmp_path)


def test_old_entries_are_pruned(tmp_path):
    cache = BuildCache(BUILD, tmp_path / "cache")
    keys = []
    for n in range(KEEP + 2):
        side = checkout(tmp_path / f"c{n}", f"pkg=={n}\n")
        keys.append(cache.key(side))
        cache.store(keys[-1], side)
        os.utime(cache.root / keys[-1], (n, n))
    left = {p.name for p in cache.root.iterdir()}
    assert len(left) == KEEP and keys[-1] in left and keys[0] not in left


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"cache_key": ["requirements.txt"]}, "needs both"),
        ({"cache_key": ["../etc/passwd"], "cache_paths": [".venv"]}, "leaves the checkout"),
        ({"cache_key": ["a"], "cache_paths": ["/abs"]}, "absolute"),
    ],
)
def test_a_cache_the_policy_gets_wrong_is_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        Build(**fields)
