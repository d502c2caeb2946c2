"""The GitHub Actions edge: `gatekeeper validate --github-event` run as a workflow step runs it.

Event files are the real payloads (tests/fixtures/github/webhooks/), retargeted at a
local repository; variants upstream has no example of (a merged pull request, a dispatch with
gatekeeper's inputs) are derived from them here, and each test says so. The step is run as a
process, with temp files for $GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY whose exact formats are
asserted. The webhook path (bot.app.service on the fake GitHub) and the Actions path must reach the
same verdict on the same payload.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.actions.errors import ActionsError
from bot.actions.event import read_event, resolve_target
from bot.actions.outputs import (
    STEP_SUMMARY_LIMIT,
    annotation_commands,
    append_step_summary,
    workflow_command,
    write_github_output,
)
from bot.actions.run import StepOptions, _NoApi, take_token
from bot.actions.run import run_step as run_step_in_process
from bot.cli.demo import load_builder
from bot.github import events
from bot.judging.verdict import Decision, Finding, Risk, Verdict
from bot.resources import data_path
from tests.app.test_merge_queue import group_event, serve_group
from tests.app.test_service import (  # the same service the App tests use
    Running,
    make_service,
    payload,
    synchronize,
    wait_run,
)
from tests.github.conftest import POLICY, REPO, commit_all
from tests.helpers import run_git as git

DELIMITED = re.compile(r"^(?P<name>[a-z-]+)<<(?P<delim>ghadelimiter_[0-9a-f]{32})\n", re.M)


def checkout(repo: Path, dest: Path) -> Path:
    """What actions/checkout with `fetch-depth: 0` leaves: a clone with every branch as
    origin/<branch>, the working tree at the event's commit."""
    subprocess.run(
        ["git", "clone", "-q", "--no-local", str(repo), str(dest)], check=True, capture_output=True
    )
    return dest


def pull_request_event(
    repo: Path, *, action: str = "synchronize", head: str = "builder/add-name", number: int = 7
) -> dict[str, Any]:
    """The real synchronize payload (octokit's example), pointed at `repo`'s branches."""
    data = copy.deepcopy(payload("pull_request.synchronize"))
    data["action"] = action
    data["number"] = number
    pr = data["pull_request"]
    pr["number"], pr["draft"], pr["author_association"] = number, False, "MEMBER"
    for side, ref in (("head", head), ("base", "main")):
        pr[side]["ref"], pr[side]["sha"] = ref, git(repo, "rev-parse", ref)
        pr[side]["repo"]["full_name"] = REPO
    data["repository"]["full_name"] = REPO
    data["repository"]["clone_url"] = f"https://github.com/{REPO}.git"
    data.pop("installation", None)  # Actions payloads carry none
    return data


class Step:
    """One run of the step: the process, and what it left in the workflow's files."""

    def __init__(self, proc: subprocess.CompletedProcess[str], tmp: Path, out: Path):
        self.proc = proc
        self.code = proc.returncode
        self.output_text = (tmp / "github_output").read_text()
        self.summary = (tmp / "step_summary").read_text()
        self.out = out

    @property
    def outputs(self) -> dict[str, str]:
        return parse_github_output(self.output_text)


def run_step(
    tmp: Path,
    repo: Path,
    event_name: str,
    event: dict[str, Any],
    *args: str,
    env: dict[str, str] | None = None,
) -> Step:
    """`gatekeeper validate --github-event` as a workflow step runs it (a process, with the
    variables the runner sets)."""
    tmp.mkdir(parents=True, exist_ok=True)
    event_path = tmp / "event.json"
    event_path.write_text(json.dumps(event))
    (tmp / "github_output").write_text("")
    (tmp / "step_summary").write_text("")
    out = tmp / "gatekeeper-report"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    full_env = {
        **base_env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_OUTPUT": str(tmp / "github_output"),
        "GITHUB_STEP_SUMMARY": str(tmp / "step_summary"),
        "GITHUB_WORKSPACE": str(repo),
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "4242",
        **(env or {}),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "validate",
            "--github-event",
            str(event_path),
            "--repo",
            str(repo),
            "--out",
            str(out),
            *args,
        ],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Step(proc, tmp, out)


def parse_github_output(text: str) -> dict[str, str]:
    """Read $GITHUB_OUTPUT as the runner does: `name=value` lines and `name<<DELIM` blocks."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            while lines[index] != delimiter:
                block.append(lines[index])
                index += 1
            index += 1
            values[name] = "\n".join(block)
        else:
            name, value = line.split("=", 1)
            values[name] = value
    return values


# Clocks, durations and what the lock monitor's sampling happened to catch.
VOLATILE = frozenset(
    {
        "locks",
        "started_at",
        "started",  # a stage's start on the run's clock
        # Whether two timings rose visibly depends on the machine's load at that moment.
        "inconclusive_timing",
        "seconds",
        "duration_ms",
        "fill_seconds",
        "held_ms",
        "first_seen",
        "last_seen",
        "samples",
        "pid",
    }
)


def comparable(verdict: dict[str, Any]) -> dict[str, Any]:
    """The verdict without what differs between any two runs of the same case: clocks and
    durations, and what follows from them (the scratch merge commit's SHA, which holds its
    creation time; server log timestamps, process ids, ports, scratch paths)."""
    merge_sha = verdict["job"].get("merge_sha") or "<no merge>"
    masks = [
        (re.escape(merge_sha), "<merge>"),
        (re.escape(merge_sha[:12]), "<merge>"),
        (r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( UTC|Z|[+-]\d\d:?\d\d)?", "<time>"),
        (r"\[\d+\]", "[<pid>]"),
        (r"\d+(\.\d+)? ?(ms|s)\b", "<t>"),
        (r"\b(port |127\.0\.0\.1:)\d+", r"\1<port>"),
        (r"/tmp/[^\s\"']+", "<tmp>"),
        # Which run slot (account) a run took depends on what else held one at the time.
        (r"gatekeeper-run-\d+ \(uid \d+", "gatekeeper-run-<slot> (uid <uid>"),
        # A lock held for milliseconds is seen or missed by the monitor's sampling.
        (r", \w+Lock held ≥<t>", ""),
    ]

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            for pattern, replacement in masks:
                value = re.sub(pattern, replacement, value)
        return value

    return clean(verdict)


# -- the formats GitHub reads ---------------------------------------------------------------


def test_workflow_commands_escape_data_and_properties_as_github_unescapes_them():
    line = workflow_command(
        "error",
        "100% wrong\r\nsecond line",
        file="db/a,b:c.sql",
        line=3,
        col=None,
        title="rule: x, y",
    )
    assert line == (
        "::error file=db/a%2Cb%3Ac.sql,line=3,title=rule%3A x%2C y::100%25 wrong%0D%0Asecond line"
    )
    assert workflow_command("warning", "plain") == "::warning::plain"


def test_findings_become_annotations_with_their_level_riskiest_first():
    def finding(rule: str, level: Risk, file: str | None, line: int | None) -> Finding:
        return Finding(
            rule=rule,
            level=level,
            message=f"{rule} found",
            file=file,
            line=line,
            column=5,
            safe_alternative="Do it, then that",
        )

    verdict = Verdict(
        decision=Decision.reject,
        risk=Risk.critical,
        summary="x",
        findings=[
            finding("prefer-timestamptz", Risk.low, "db/002.sql", 4),
            finding("ban-drop-table", Risk.critical, "db/002.sql", 2),
            finding("require-lock-timeout", Risk.medium, "db/002.sql", 3),
            finding("startup-only", Risk.high, "(run at start-up)", 1),
            finding("no-line", Risk.high, "db/002.sql", None),
        ],
    )
    lines = annotation_commands(verdict, "svc/")
    assert lines == [
        "::error file=svc/db/002.sql,line=2,endLine=2,col=5,title=ban-drop-table"
        "::ban-drop-table found%0ASafer: Do it, then that",
        "::warning file=svc/db/002.sql,line=3,endLine=3,col=5,title=require-lock-timeout"
        "::require-lock-timeout found%0ASafer: Do it, then that",
        "::notice file=svc/db/002.sql,line=4,endLine=4,col=5,title=prefer-timestamptz"
        "::prefer-timestamptz found%0ASafer: Do it, then that",
    ]


def test_github_output_uses_a_random_delimiter_for_values_that_may_hold_newlines(tmp_path):
    path = tmp_path / "out"
    path.write_text("earlier=1\n")
    write_github_output(
        path,
        {"decision": "reject", "summary": "two\nlines", "report-path": "/r/report.md"},
        multiline={"summary", "report-path"},
    )
    text = path.read_text()
    blocks = DELIMITED.findall(text)
    assert [name for name, _ in blocks] == ["summary", "report-path"]
    (_, first), (_, second) = blocks
    assert first != second
    assert text == (
        "earlier=1\n"
        "decision=reject\n"
        f"summary<<{first}\ntwo\nlines\n{first}\n"
        f"report-path<<{second}\n/r/report.md\n{second}\n"
    )
    assert parse_github_output(text) == {
        "earlier": "1",
        "decision": "reject",
        "summary": "two\nlines",
        "report-path": "/r/report.md",
    }


def test_step_summary_stays_within_one_mebibyte_with_a_marker(tmp_path):
    path = tmp_path / "summary"
    path.write_text("x" * 1000)  # an earlier write of the same step counts too
    report = "# Report\n\n```\n" + "a line of log output\n" * 100_000 + "```\n"
    append_step_summary(path, report, "\n✂️ cut\n")
    data = path.read_bytes()
    assert len(data) <= STEP_SUMMARY_LIMIT
    assert len(data) > STEP_SUMMARY_LIMIT - 200
    text = data.decode()
    assert text.endswith("```\n\n✂️ cut\n")  # the open code block is closed before the marker
    small = tmp_path / "small"
    append_step_summary(small, "# short\n", "cut")
    assert small.read_text() == "# short\n"


def test_the_token_is_read_and_every_credential_removed_from_the_environment():
    environ = {"GITHUB_TOKEN": " ghs_abc ", "GH_TOKEN": "x", "ACTIONS_RUNTIME_TOKEN": "y", "A": "1"}
    assert take_token(environ) == "ghs_abc"
    assert environ == {"A": "1"}
    assert take_token({}) is None


# -- events -> targets: the one mapping of bot.github.events ---------------------------------------


class StubPulls:
    """REST answers for the lookups a push needs (the fake GitHub's OpenAPI subset has no
    `GET /repos/{repo}/commits/{sha}/pulls`): pull requests in GitHub's shape, derived from
    the real webhook example's `pull_request`."""

    def __init__(self, pulls: list[dict[str, Any]]):
        self.pulls = {p["number"]: p for p in pulls}
        self.asked: list[str] = []

    def pull_request(self, repo: str, number: int) -> dict[str, Any]:
        self.asked.append(f"pull {number}")
        return self.pulls[number]

    def pulls_for_commit(self, repo: str, sha: str) -> list[dict[str, Any]]:
        self.asked.append(f"commit {sha[:7]}")
        return list(self.pulls.values())


def no_refs(ref: str) -> str:
    raise AssertionError(f"nothing to resolve, asked for {ref}")


def test_pull_request_events_map_exactly_as_the_webhook_does():
    for name in ("pull_request.synchronize", "pull_request.opened", "pull_request.labeled"):
        data = payload(name)
        assert resolve_target("pull_request", data, StubPulls([]), no_refs) == (
            events.route("pull_request", data)
        )


def test_a_tag_push_is_skipped_without_asking_the_api():
    lookups = StubPulls([])
    routed = resolve_target("push", payload("push"), lookups, no_refs)
    assert isinstance(routed, events.Ignored) and "is not a branch" in routed.reason
    assert lookups.asked == []


def test_a_push_to_a_builder_branch_validates_its_open_pull_request():
    push = payload("push.with-new-branch")
    push["ref"] = "refs/heads/builder/fix"
    pull = copy.deepcopy(payload("pull_request.synchronize")["pull_request"])
    pull["head"]["ref"], pull["head"]["sha"] = "builder/fix", push["after"]
    pull["author_association"] = "MEMBER"
    lookups = StubPulls([pull])
    target = resolve_target("push", push, lookups, no_refs)
    assert isinstance(target, events.Target)
    assert target == events.target_from_pull_request(
        pull, push["repository"]["full_name"], None, "push"
    )
    assert (target.head_sha, target.base_ref, target.pr_number) == (push["after"], "master", 2)


def test_a_push_that_merged_a_pull_request_revalidates_the_target():
    """Derived: upstream has no merged pull request; the closed example gets merged: true."""
    push = payload("push.with-new-branch")
    pull = copy.deepcopy(payload("pull_request.closed")["pull_request"])
    pull["merged"], pull["merge_commit_sha"] = True, push["after"]
    pull["merged_at"] = "2019-05-15T15:20:33Z"
    target = resolve_target("push", push, StubPulls([pull]), no_refs)
    closed = {"action": "closed", "pull_request": pull, "repository": push["repository"]}
    expected = events.route("pull_request", closed)
    assert isinstance(target, events.Target) and target.merged
    assert target == expected.model_copy(update={"trigger": "push"})
    assert target.head_sha == push["after"] and target.base_sha is None


def test_a_push_no_pull_request_knows_is_skipped_and_without_a_token_is_an_error():
    push = payload("push.with-new-branch")
    routed = resolve_target("push", push, StubPulls([]), no_refs)
    assert isinstance(routed, events.Ignored) and "no pull request" in routed.reason
    with pytest.raises(ActionsError, match="GITHUB_TOKEN"):
        resolve_target("push", push, _NoApi(), no_refs)


def dispatch_event(**inputs: str) -> dict[str, Any]:
    """Derived from the real workflow_dispatch example: gatekeeper's inputs instead of
    `name`, as GitHub sends them (strings)."""
    data = copy.deepcopy(payload("workflow_dispatch"))
    data["inputs"] = inputs
    return data


def test_dispatch_mode_inputs_are_taken_as_sent():
    data = dispatch_event(
        base_ref="main",
        base_sha="a" * 40,
        head_ref="builder/x",
        head_sha="b" * 40,
        pr_number="7",
        run_id="15",
    )
    target = resolve_target("workflow_dispatch", data, _NoApi(), no_refs)
    assert isinstance(target, events.Target)
    assert (target.base_ref, target.base_sha, target.head_ref, target.head_sha) == (
        "main",
        "a" * 40,
        "builder/x",
        "b" * 40,
    )
    assert target.pr_number == 7 and target.trigger == "workflow_dispatch (gatekeeper run 15)"
    assert target.repository == "octo-org/octo-repo"


def test_a_manual_dispatch_of_a_branch_resolves_it_in_the_checkout():
    data = dispatch_event(head_ref="builder/x")
    target = resolve_target("workflow_dispatch", data, _NoApi(), lambda ref: "c" * 40)
    assert isinstance(target, events.Target)
    assert (target.base_ref, target.head_sha, target.author) == ("master", "c" * 40, "Codertocat")
    with pytest.raises(ActionsError, match="head_ref"):
        resolve_target("workflow_dispatch", dispatch_event(), _NoApi(), no_refs)
    with pytest.raises(ActionsError, match="pr_number"):
        resolve_target("workflow_dispatch", dispatch_event(pr_number="seven"), _NoApi(), no_refs)


def test_a_dispatch_naming_only_a_pull_request_reads_it():
    pull = copy.deepcopy(payload("pull_request.synchronize")["pull_request"])
    target = resolve_target(
        "workflow_dispatch", dispatch_event(pr_number="2"), StubPulls([pull]), no_refs
    )
    assert isinstance(target, events.Target)
    assert target.head_sha == pull["head"]["sha"] and target.trigger == "workflow_dispatch"


# -- the step, end to end -------------------------------------------------------------------


def test_a_builder_pull_request_is_validated_with_outputs_summary_and_artifact(tmp_path, repo):
    workspace = checkout(repo, tmp_path / "workspace")
    step = run_step(tmp_path / "step", workspace, "pull_request", pull_request_event(repo))
    assert step.code == 0, step.proc.stderr
    out = step.out.resolve()
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["decision"] == "approve" and verdict["job"]["pr_number"] == 7
    assert verdict["job"]["trigger"] == "pull_request.synchronize"
    assert verdict["job"]["head_sha"] == git(repo, "rev-parse", "builder/add-name")
    # $GITHUB_OUTPUT, exactly: plain lines for enums, delimited blocks for the rest.
    blocks = dict(DELIMITED.findall(step.output_text))
    assert list(blocks) == ["report-path", "verdict-path", "summary"]
    assert step.output_text == (
        "decision=approve\n"
        f"risk={verdict['risk']}\n"
        "exit-code=0\n"
        f"report-path<<{blocks['report-path']}\n{out / 'report.md'}\n{blocks['report-path']}\n"
        f"verdict-path<<{blocks['verdict-path']}\n{out / 'verdict.json'}\n"
        f"{blocks['verdict-path']}\n"
        f"summary<<{blocks['summary']}\n{verdict['summary']}\n{blocks['summary']}\n"
    )
    assert step.summary == (out / "report.md").read_text()
    assert step.summary.startswith("# ✅ Gatekeeper: APPROVE")
    # Workflow commands are stopped while the change's text is printed, then resumed.
    stop = re.search(r"^::stop-commands::([0-9a-f]{32})$", step.proc.stdout, re.M)
    assert stop and f"\n::{stop.group(1)}::\n" in step.proc.stdout


def test_risky_migration_lines_are_annotated_by_level(tmp_path, repo):
    # Production-sized: the same statements are riskier on a table of 20 million rows.
    (repo / ".github" / "gatekeeper.yml").write_text(POLICY.replace("rows: 1000", "rows: 20000000"))
    commit_all(repo, "gate: items is big")
    git(repo, "checkout", "-q", "builder/add-name")
    git(repo, "rebase", "-q", "main")
    (repo / "migrations" / "003_index.sql").write_text(
        "-- name lookups\n"
        "CREATE INDEX IF NOT EXISTS items_name ON items (name);\n"
        "ALTER TABLE items ALTER COLUMN name TYPE varchar(10);\n"
    )
    commit_all(repo, "index items.name")
    git(repo, "checkout", "-q", "main")
    workspace = checkout(repo, tmp_path / "workspace")
    step = run_step(tmp_path / "step", workspace, "pull_request", pull_request_event(repo))
    assert step.code in (1, 3), step.proc.stderr
    commands = step.proc.stdout.splitlines()
    # Read by the runner: after the line that resumes workflow commands.
    resume = next(i for i, line in enumerate(commands) if re.fullmatch(r"::[0-9a-f]{32}::", line))
    notes = [line for line in commands[resume + 1 :] if line.startswith("::")]
    high = (
        "::error file=migrations/003_index.sql,line=2,endLine=2,col=1,"
        "title=require-concurrent-index-creation::CREATE INDEX items_name on items without "
        "CONCURRENTLY"
    )
    medium = (
        "::warning file=migrations/003_index.sql,line=3,endLine=3,col=1,"
        "title=changing-column-type::ALTER COLUMN name TYPE varchar(10)"
    )
    assert any(line.startswith(high) for line in notes), notes
    assert any(line.startswith(medium) for line in notes), notes
    assert notes.index(next(n for n in notes if n.startswith(high))) == 0  # riskiest first


def test_a_pull_request_from_a_branch_that_is_not_a_builder_is_skipped(tmp_path, repo):
    git(repo, "branch", "feature/docs", "builder/add-name")
    workspace = checkout(repo, tmp_path / "workspace")
    event = pull_request_event(repo, head="feature/docs")
    step = run_step(tmp_path / "step", workspace, "pull_request", event)
    assert step.code == 0, step.proc.stderr
    assert step.outputs["decision"] == "skipped" and step.outputs["risk"] == ""
    assert "is not a builder branch" in step.outputs["reason"]
    assert step.summary.startswith("# ⏭️ Gatekeeper: SKIPPED")
    assert not (step.out / "verdict.json").exists()


def test_an_event_that_skips_the_gate_on_a_builder_pull_request_fails_closed(tmp_path, repo):
    """A workflow also triggered on `labeled`: a green job would replace the verdict's."""
    workspace = checkout(repo, tmp_path / "workspace")
    event = pull_request_event(repo, action="labeled")
    step = run_step(tmp_path / "step", workspace, "pull_request", event)
    assert step.code == 2, step.proc.stderr
    assert step.outputs["decision"] == "error"
    assert "gate did not run for 'pull_request.labeled'" in step.outputs["reason"]
    assert "::error title=Gatekeeper could not run::" in step.proc.stdout
    draft = pull_request_event(repo, action="converted_to_draft")
    draft["pull_request"]["draft"] = True
    step = run_step(tmp_path / "draft", workspace, "pull_request", draft)
    assert step.code == 0 and step.outputs["decision"] == "skipped"


def test_an_event_the_gate_does_not_know_fails_instead_of_passing(tmp_path, repo):
    """A workflow triggered on `deployment`: a green job would pass as a validation nobody
    ran, so the step ends in an error that says so."""
    workspace = checkout(repo, tmp_path / "workspace")
    step = run_step(tmp_path / "step", workspace, "deployment", payload("ping"))
    assert step.code == 2, step.proc.stderr
    assert step.outputs["decision"] == "error"
    assert "unknown event 'deployment'" in step.outputs["reason"]
    assert "remove the event from the workflow's triggers" in step.outputs["reason"]


def queued_group_step(
    fake: Any, repo: Path, tmp_path: Path, fixes: dict[str, dict[str, str]]
) -> tuple[str, str, dict[str, Any], Any]:
    """`fixes` (branch -> files) queued as pull requests 7, 8…; the step run in
    `tmp_path`/workspace on the group's merge_group event with --post and a token. Returns
    (base_sha, head_sha, the event, the step)."""
    base, head, ref = serve_group(fake, repo, fixes)
    event = group_event(fake, base, head, ref)
    event.pop("installation")  # Actions payloads carry none
    workspace = checkout(repo, tmp_path / "workspace")
    api = {"GITHUB_TOKEN": fake.issue_token(), "GITHUB_API_URL": fake.url}
    step = run_step(tmp_path / "step", workspace, "merge_group", event, "--post", env=api)
    return base, head, event, step


def test_a_green_merge_group_gets_success_on_its_head(fake_github, repo, tmp_path):
    """Two healthy fixes queued together: one validation of the group's head, success posted
    there (what the queue waits for), no culprit searched and no comment."""
    fake = fake_github
    note = {"migrations/003_note.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"}
    _base, head, _event, step = queued_group_step(
        fake, repo, tmp_path, {"builder/add-name": {}, "builder/note": note}
    )
    assert step.code == 0, step.proc.stderr
    assert step.outputs["decision"] == "approve"
    assert [s["state"] for s in fake.statuses(REPO, head)] == ["pending", "success"]
    verdict = json.loads((step.out / "verdict.json").read_text())
    assert [m["pr_number"] for m in verdict["job"]["batch"]] == [7, 8]
    assert "batch" not in verdict["evidence"] or not verdict["evidence"]["batch"].get("tried")
    (check,) = fake.check_runs(REPO)
    assert check.data["head_sha"] == head and check.data["conclusion"] == "success"
    assert fake.comments(REPO, 7) == [] and fake.comments(REPO, 8) == []


def test_a_merge_group_is_validated_reported_on_its_head_and_names_its_culprit(
    fake_github, repo, tmp_path
):
    """The real merge_group payload on a queue branch of two builder fixes: the step
    validates the group's head against its base and posts on the head. The App's culprit
    search runs in the step too: the first pull request fails on its own (its prefix is the
    queue's first commit), so it is named without another run, on the group's check run and
    in a comment on that pull request."""
    fake = fake_github
    broken = {"migrations/003_broken.sql": "ALTER TABLE nowhere ADD COLUMN x int;\n"}
    base, head, event, step = queued_group_step(
        fake, repo, tmp_path, {"builder/broken": broken, "builder/add-name": {}}
    )
    assert step.code == 1, step.proc.stderr
    assert step.outputs["decision"] == "reject"
    assert [s["state"] for s in fake.statuses(REPO, head)] == ["pending", "failure"]
    verdict = json.loads((step.out / "verdict.json").read_text())
    assert (verdict["job"]["base_sha"], verdict["job"]["head_sha"]) == (base, head)
    assert [m["pr_number"] for m in verdict["job"]["batch"]] == [7, 8]
    assert "merged in this order: #7 **builder/broken**" in step.summary
    named = "culprit: #7 builder/broken fails alone: "
    assert verdict["reasons"][0].startswith(named)
    assert [(t["heads"], t["base"]) for t in verdict["evidence"]["batch"]["tried"]] == [
        ("#7 builder/broken + #8 builder/add-name", "made"),
        ("#7 builder/broken", "restored"),
    ]
    (check,) = fake.check_runs(REPO)
    assert check.data["head_sha"] == head and check.data["conclusion"] == "failure"
    assert named in check.data["output"]["summary"]
    (comment,) = fake.comments(REPO, 7)
    assert "builder/broken fails alone" in comment["body"]
    assert fake.comments(REPO, 8) == []
    # The group's pull requests are read through the API: without a token, say how to pass it.
    step = run_step(tmp_path / "no-token", tmp_path / "workspace", "merge_group", event)
    assert step.code == 2 and "GITHUB_TOKEN" in step.outputs["reason"]


def test_a_shallow_checkout_is_an_error_that_says_fetch_depth_0(tmp_path, repo):
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)],
        check=True,
        capture_output=True,
    )
    step = run_step(tmp_path / "step", shallow, "pull_request", pull_request_event(repo))
    assert step.code == 2
    assert step.outputs["decision"] == "error"
    assert "fetch-depth: 0" in step.outputs["reason"]
    verdict = json.loads((step.out / "verdict.json").read_text())
    assert verdict["decision"] == "error" and verdict["risk"] is None
    assert "could not reach a decision" in step.summary


def test_pull_request_target_refuses_a_fork(tmp_path, repo):
    workspace = checkout(repo, tmp_path / "workspace")
    event = pull_request_event(repo)
    event["pull_request"]["head"]["repo"]["full_name"] = "stranger/inventory"
    event["pull_request"]["author_association"] = "FIRST_TIME_CONTRIBUTOR"
    step = run_step(tmp_path / "step", workspace, "pull_request_target", event)
    assert step.code == 2 and "pull_request_target" in step.outputs["reason"]


def test_post_without_a_token_is_a_usage_error(tmp_path, repo):
    step = run_step(tmp_path / "step", repo, "pull_request", pull_request_event(repo), "--post")
    assert step.code == 2 and "GITHUB_TOKEN" in step.proc.stderr


def test_the_plain_command_line_is_unchanged(tmp_path, repo):
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "validate", "--repo", str(repo)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--head" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "validate", "--github-event", "x.json", "--head", "b"],
        capture_output=True,
        text=True,
        env={**os.environ, "GITHUB_EVENT_NAME": "push"},
    )
    assert proc.returncode == 2 and "come from the event" in proc.stderr


# -- the same case through the webhook and through Actions ----------------------------------


def test_webhook_and_actions_give_the_same_verdict(served, store, repo, tmp_path):
    fake = served
    event = synchronize(fake, 7, fake.installation_id)
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("pull_request", event)
        assert answer.status_code == 202, answer.text
        run = wait_run(store, answer.json()["run"])
    assert run["state"] == "done", run["detail"]
    workspace = checkout(repo, tmp_path / "workspace")
    step = run_step(tmp_path / "step", workspace, "pull_request", event)
    assert step.code == 0, step.proc.stderr
    from_actions = json.loads((step.out / "verdict.json").read_text())
    assert comparable(from_actions) == comparable(run["verdict"])
    assert step.outputs["decision"] == run["decision"] and step.outputs["risk"] == run["risk"]


def test_post_reports_on_the_pull_request_with_the_workflow_token(served, repo, tmp_path):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    event = synchronize(fake, 7, fake.installation_id)
    event.pop("installation")
    workspace = checkout(repo, tmp_path / "workspace")
    token = fake.issue_token()
    step = run_step(
        tmp_path / "step",
        workspace,
        "pull_request",
        event,
        "--post",
        env={"GITHUB_TOKEN": token, "GITHUB_API_URL": fake.url},
    )
    assert step.code == 0, step.proc.stderr
    assert token not in step.proc.stdout + step.proc.stderr
    statuses = fake.statuses(REPO, sha)
    assert [s["state"] for s in statuses] == ["pending", "success"]
    assert statuses[-1]["context"] == "gatekeeper"
    assert statuses[-1]["target_url"] == f"https://github.com/{REPO}/actions/runs/4242"
    (check,) = fake.check_runs(REPO)
    assert check.data["status"] == "completed" and check.data["conclusion"] == "success"
    (comment,) = fake.comments(REPO, 7)
    assert comment["body"].startswith("<!-- gatekeeper:report -->")
    assert "Gatekeeper: APPROVE" in comment["body"]
    assert {r.headers.get("authorization") for r in fake.calls("repos/create-commit-status")} == {
        f"token {token}"
    }
    # The fake_github fixture then asserts every request was one GitHub accepts.


def test_dispatch_mode_posts_the_status_the_service_waits_for(served, repo, tmp_path):
    """The inputs the service's dispatch mode sends (bot.app.service): the workflow validates
    exactly the SHAs it was given and reports back on them with its own token."""
    fake = served
    pull = fake.state.repos[REPO].pulls[7]
    event = dispatch_event(
        base_ref="main",
        base_sha=pull.base_sha,
        head_ref="builder/add-name",
        head_sha=pull.head_sha,
        pr_number="7",
        run_id="31",
    )
    event["repository"]["full_name"] = REPO
    workspace = checkout(repo, tmp_path / "workspace")
    step = run_step(
        tmp_path / "step",
        workspace,
        "workflow_dispatch",
        event,
        "--post",
        "--no-comment",
        env={"GITHUB_TOKEN": fake.issue_token(), "GITHUB_API_URL": fake.url},
    )
    assert step.code == 0, step.proc.stderr
    assert step.outputs["run-id"] == "31"
    assert [s["state"] for s in fake.statuses(REPO, pull.head_sha)] == ["pending", "success"]
    assert fake.comments(REPO, 7) == []
    verdict = json.loads((step.out / "verdict.json").read_text())
    assert verdict["job"]["trigger"] == "workflow_dispatch (gatekeeper run 31)"


# -- the demo repository ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("case", "code"), [("fix", 0), ("no-fix", 1)])
def test_the_demo_cases_through_the_actions_path(tmp_path, case, code):
    repo = tmp_path / "sessions-api"
    cases = {c.name: c for c in load_builder().build(repo)}
    wanted = cases[case]
    event = pull_request_event(repo, head=wanted.head)
    workspace = checkout(repo, tmp_path / "workspace")
    env = {
        "SESSIONS_JWT_SECRET": "actions-demo-secret",
        "GATEKEEPER_PASS_ENV": "SESSIONS_JWT_SECRET",
    }
    policy = data_path("policies") / "sessions-api.yml"
    step = run_step(
        tmp_path / "step", workspace, "pull_request", event, "--policy", str(policy), env=env
    )
    assert step.code == code, step.proc.stderr
    assert step.outputs["decision"] == wanted.expected_decision
    assert step.summary.startswith(f"# {'✅' if code == 0 else '❌'} Gatekeeper:")


def test_run_step_in_process_writes_nothing_when_the_runner_files_are_absent(tmp_path, repo):
    """Outside Actions (no $GITHUB_OUTPUT, no $GITHUB_STEP_SUMMARY) the step still decides."""
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(pull_request_event(repo, head="main")))
    stdout = io.StringIO()
    result = run_step_in_process(
        StepOptions(event_path, "pull_request", repo=repo, out=tmp_path / "o"),
        lambda job, repo, loaded: pytest.fail("nothing to validate"),
        lookups=None,
        publisher_factory=None,
        env={},
        stdout=stdout,
    )
    assert result.decision == "skipped" and result.exit_code == 0
    assert "not a builder branch" in result.reason and stdout.getvalue() == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is not a regular file"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (b'{"number": ' + b"9" * 5000 + b"}", "number is an integer of 5000 digits"),
        (b'{"ref": "a\\u0000b"}', "ref contains a NUL character"),
        (b"\xff\xfe", "is not JSON"),
    ],
)
def test_a_bad_event_file_is_a_clear_error(tmp_path, content, message):
    """The event file is read like a webhook body: bounded, and every value checked."""
    if content is None:
        path = Path("/dev/zero")
    else:
        path = tmp_path / "event.json"
        path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(ActionsError, match=message):
        read_event(path)
    assert time.monotonic() - started < 5


def test_a_hostile_build_in_the_step_leaks_no_secret_of_the_step(tmp_path, repo):
    """The step's environment holds secrets the workflow gave it (`env: MY_DEPLOY_SECRET:
    ${{ secrets.X }}`): the change's build gets none of them, and none is in any output, also
    when the operator passed one to the policy on purpose."""
    (repo / ".github" / "gatekeeper.yml").write_text(
        POLICY
        + "api: {command: 'true', env: {API_KEY: '${PASSED_SECRET}'}}\n"
        # The change's build.sh; the base (both sides build) has none and builds nothing.
        + "build: {commands: ['test ! -e build.sh || sh build.sh']}\n"
    )
    commit_all(repo, "gate: a build that prints its environment")
    git(repo, "checkout", "-q", "builder/add-name")
    git(repo, "rebase", "-q", "main")
    (repo / "build.sh").write_text("env; echo $API_KEY | base64; exit 3\n")
    commit_all(repo, "hostile: print the environment")
    git(repo, "checkout", "-q", "main")
    secrets = {"MY_DEPLOY_SECRET": "canary-step-3f9a0c7d21", "PASSED_SECRET": "canary-pass-81be4d"}
    workspace = checkout(repo, tmp_path / "workspace")
    step = run_step(
        tmp_path / "step",
        workspace,
        "pull_request",
        pull_request_event(repo),
        env={**secrets, "GATEKEEPER_PASS_ENV": "PASSED_SECRET"},
    )
    assert step.code == 1, step.proc.stderr
    outputs = [step.proc.stdout, step.proc.stderr, step.output_text, step.summary]
    outputs += [p.read_text() for p in step.out.iterdir() if p.is_file()]
    for value in secrets.values():
        assert not [text for text in outputs if value in text]
        assert not [
            text for text in outputs if base64.b64encode(value.encode()).decode()[:12] in text
        ]
    assert "API_KEY=***" in step.summary
