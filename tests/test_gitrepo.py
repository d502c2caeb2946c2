"""Merges happen in a scratch clone: the user's repository is never written to."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.gitrepo import GitError, Scratch, extract, first_parents, read_file, resolve
from tests.helpers import git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "builder/ok")
    (repo / "b.txt").write_text("new\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "fix: add b")
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-qb", "builder/clash")
    (repo / "a.txt").write_text("theirs\n")
    git(repo, "commit", "-qam", "change a")
    git(repo, "checkout", "-q", "main")
    (repo / "a.txt").write_text("ours\n")
    git(repo, "commit", "-qam", "main changes a")
    return repo


def test_unknown_ref_is_named(repo):
    with pytest.raises(GitError, match="unknown ref 'builder/nope'"):
        resolve(repo, "builder/nope")


def test_not_a_repository(tmp_path):
    with pytest.raises(GitError, match="not a git repository"):
        resolve(tmp_path, "main")


def test_clean_merge_and_changed_files(repo):
    before = git(repo, "for-each-ref")
    base, head = resolve(repo, "main"), resolve(repo, "builder/ok")
    with Scratch(repo) as scratch:
        merge = scratch.merge(base, head)
        assert merge.ok and merge.sha
        files = scratch.changed_files(base, merge.sha)
        assert [(f.status, f.path, f.added) for f in files] == [("A", "b.txt", 1)]
        assert [c.subject for c in scratch.commits(base, head)] == ["fix: add b"]
        checkout = scratch.checkout(merge.sha, "merge")
        assert (checkout / "b.txt").read_text() == "new\n"
        assert (checkout / "a.txt").read_text() == "ours\n"
        root = scratch.root
    assert not root.exists()
    assert git(repo, "for-each-ref") == before, "the user's refs must not change"


def test_conflict_names_the_files(repo):
    with Scratch(repo) as scratch:
        merge = scratch.merge(resolve(repo, "main"), resolve(repo, "builder/clash"))
    assert not merge.ok
    assert merge.conflicts == ["a.txt"]


def test_read_file_at_a_commit(repo):
    sha = resolve(repo, "builder/ok")
    assert read_file(repo, sha, "b.txt") == "new\n"
    assert read_file(repo, sha, "missing.txt") is None


def test_extract_writes_the_tree_and_skips_links_that_leave_it(repo, tmp_path):
    """A base branch may hold links to absolute paths or outside the tree: they are not
    written (so nothing follows them), and the rest of the tree is."""
    (repo / "bin").mkdir()
    (repo / "bin" / "run.sh").write_text("#!/bin/sh\n")
    (repo / "bin" / "run.sh").chmod(0o755)
    (repo / "docs-link").symlink_to("/etc")
    (repo / "up").symlink_to("../..")
    (repo / "inside").symlink_to("bin/run.sh")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "links")
    dest = tmp_path / "tree"
    dest.mkdir()
    extract(repo, resolve(repo, "HEAD"), dest)
    assert (dest / "a.txt").read_text() == "ours\n"
    assert (dest / "bin" / "run.sh").stat().st_mode & 0o111
    assert (dest / "inside").is_symlink() and (dest / "inside").read_text() == "#!/bin/sh\n"
    assert not (dest / "docs-link").exists() and not (dest / "docs-link").is_symlink()
    assert not (dest / "up").is_symlink()


def test_read_file_keeps_bytes_that_are_not_utf8_and_stops_at_the_limit(repo):
    (repo / "latin1.yml").write_bytes(b"name: caf\xe9\n")
    (repo / "big.txt").write_text("x" * 5000)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "odd files")
    sha = resolve(repo, "HEAD")
    assert read_file(repo, sha, "latin1.yml") == "name: caf\udce9\n"
    assert read_file(repo, sha, "big.txt", limit=100) == "x" * 101
    assert read_file(repo, sha, "missing.yml") is None


def test_a_sequence_merges_each_head_onto_those_before_it(repo):
    """builder/ok merges onto base; builder/clash then conflicts with main's a.txt: `at`
    names it (the second head), and a clean sequence is a first-parent chain of merges."""
    base = resolve(repo, "main")
    ok, clash = resolve(repo, "builder/ok"), resolve(repo, "builder/clash")
    with Scratch(repo) as scratch:
        clean = scratch.merge_sequence(base, [ok])
        assert clean.ok and clean.at is None and clean.sha
        chain = first_parents(scratch.clone, base, clean.sha)
        assert [link.parents for link in chain] == [[base, ok]]
        broken = scratch.merge_sequence(base, [ok, clash])
    assert not broken.ok and broken.at == 1 and broken.conflicts == ["a.txt"]
