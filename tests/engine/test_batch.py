"""`gatekeeper validate --head A --head B`: builder branches merged in order and validated as
one batch, and the head that breaks a rejected batch named. Run as a user runs it (a process),
on a real repository, with the pipeline and PostgreSQL underneath.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.app.test_merge_queue import ADD_CODE_INTEGER, ADD_CODE_TEXT, branch
from tests.github.conftest import inventory_repo


def validate(repo: Path, out: Path, *heads: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """The command, its verdict (verdict.json in `out`, or {} when it wrote none)."""
    args = [arg for head in heads for arg in ("--head", head)]
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "validate", "--repo", str(repo), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    path = out / "verdict.json"
    return proc, json.loads(path.read_text()) if path.exists() else {}


def test_two_heads_that_pass_together_are_approved_as_one_batch(tmp_path):
    repo = inventory_repo(tmp_path)
    branch(repo, "builder/add-code", {"migrations/003_code.sql": ADD_CODE_TEXT})
    proc, verdict = validate(repo, tmp_path / "out", "builder/add-name", "builder/add-code")
    assert proc.returncode == 0, proc.stderr
    job = verdict["job"]
    assert job["head_ref"] == "builder/add-name + builder/add-code"
    assert [m["ref"] for m in job["batch"]] == ["builder/add-name", "builder/add-code"]
    # The combination holds both fixes' migrations, merged in order onto main.
    changed = {f["path"] for f in verdict["evidence"]["changed_files"]}
    assert {"migrations/002_name.sql", "migrations/003_code.sql"} <= changed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "merged in this order: **builder/add-name**" in report


def test_a_head_that_breaks_the_batch_is_named(tmp_path):
    """Each fix passes alone; after builder/code-text, builder/code-integer's view compares a
    text column with a number and its migration fails."""
    repo = inventory_repo(tmp_path)
    branch(repo, "builder/code-text", {"migrations/002_code.sql": ADD_CODE_TEXT})
    branch(repo, "builder/code-integer", {"migrations/003_code.sql": ADD_CODE_INTEGER})
    proc, verdict = validate(repo, tmp_path / "out", "builder/code-text", "builder/code-integer")
    assert proc.returncode == 1, proc.stderr
    assert verdict["decision"] == "reject"
    assert verdict["reasons"][0].startswith(
        "culprit: builder/code-integer passes alone, fails after builder/code-text: "
    )
    found = verdict["evidence"]["batch"]
    assert found["culprit"] == "builder/code-integer" and found["fails_alone"] is False
    # The batch's run made the base and kept it; the search's runs restored it.
    assert [(t["heads"], t["decision"], t["base"]) for t in found["tried"]] == [
        ("builder/code-text + builder/code-integer", "reject", "made"),
        ("builder/code-text", "approve", "restored"),
        ("builder/code-integer", "approve", "restored"),
    ]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "culprit: builder/code-integer passes alone" in report
    # The report shows the search: what each run validated, its decision and its base.
    assert "**Culprit search**" in report
    assert re.search(r"\| builder/code-text \| approve \| [0-9.]+ \| restored \|", report)


def test_a_head_that_fails_alone_is_named_as_such(tmp_path):
    repo = inventory_repo(tmp_path)
    branch(
        repo, "builder/broken", {"migrations/003_broken.sql": "ALTER TABLE nowhere ADD x int;\n"}
    )
    proc, verdict = validate(repo, tmp_path / "out", "builder/broken", "builder/add-name")
    assert proc.returncode == 1, proc.stderr
    assert verdict["reasons"][0].startswith("culprit: builder/broken fails alone: ")
    assert [t["heads"] for t in verdict["evidence"]["batch"]["tried"]] == [
        "builder/broken + builder/add-name",
        "builder/broken",
    ]


def test_heads_that_conflict_name_the_pair(tmp_path):
    repo = inventory_repo(tmp_path)
    branch(repo, "builder/a", {"migrations/002_name.sql": ADD_CODE_TEXT})
    proc, verdict = validate(repo, tmp_path / "out", "builder/add-name", "builder/a")
    assert proc.returncode == 1, proc.stderr
    (merge,) = [c for c in verdict["criteria"] if c["id"] == "merge"]
    assert merge["status"] == "failed"
    assert merge["title"] == "builder/a merges cleanly into main + builder/add-name"
    assert "migrations/002_name.sql" in merge["evidence"]
    assert verdict["reasons"][0].startswith("culprit: builder/a conflicts with builder/add-name")


def test_a_head_given_twice_is_a_usage_error(tmp_path):
    repo = inventory_repo(tmp_path)
    proc, verdict = validate(repo, tmp_path / "out", "builder/add-name", "builder/add-name")
    assert proc.returncode == 2 and "the same --head is given twice" in proc.stderr
    assert verdict == {}
