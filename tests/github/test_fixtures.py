"""The GitHub fixtures the tests read are copies kept in the repository (tests/fixtures/github/),
so a clone with nothing beside it tests. Where the project's shared/ directory sits beside the
clone (the developers' machines, CI), the copies must match it: a payload added there is
copied here, byte for byte."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from tests.helpers import GITHUB_FIXTURES

SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "github"


def test_the_copies_have_their_sources_and_licences() -> None:
    for part in ("webhooks", "openapi"):
        assert "MIT" in (GITHUB_FIXTURES / part / "SOURCE.md").read_text()
        assert "Permission is hereby granted" in (GITHUB_FIXTURES / part / "LICENSE").read_text()


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared/ beside the clone ({SHARED})")
@pytest.mark.parametrize("part", ["webhooks", "openapi"])
def test_the_copies_match_shared(part: str) -> None:
    ours, theirs = GITHUB_FIXTURES / part, SHARED / part
    names = sorted(p.name for p in theirs.iterdir())
    copied = sorted(p.name for p in ours.iterdir() if p.name != "LICENSE")
    assert copied == names, f"copy {theirs} to {ours}"
    _match, mismatch, errors = filecmp.cmpfiles(theirs, ours, names, shallow=False)
    assert not mismatch and not errors, f"differ from {theirs}: {mismatch + errors}"
