"""Merge queues and pushes through the App: real `merge_group` and `push` payloads, retargeted
at a queue branch built as GitHub builds one (main, then each queued pull request merged in
order), delivered signed to the service, which validates on the fake GitHub.

A queue whose required check never reports stalls until GitHub times the group out, so every
test here ends on a final status of the group's head: success, failure, or the error of a
group GitHub destroyed.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from tests.github.conftest import REPO, commit_all
from tests.github.fake import FakeGitHub
from tests.helpers import run_git as git

from .test_service import Running, make_service, payload, synchronize, wait_final, wait_run


def branch(repo: Path, name: str, files: dict[str, str]) -> str:
    """A builder branch off main with `files` committed; returns its head SHA."""
    git(repo, "checkout", "-q", "-b", name, "main")
    for path, text in files.items():
        (repo / path).write_text(text)
    sha = commit_all(repo, f"fix: {name}")
    git(repo, "checkout", "-q", "main")
    return sha


def queue(repo: Path, pulls: list[tuple[int, str]]) -> tuple[str, str, str]:
    """GitHub's queue branch for `pulls` (number, branch), merged in order onto main with the
    queue's merge messages; returns (base_sha, head_sha, queue branch)."""
    base = git(repo, "rev-parse", "main")
    git(repo, "checkout", "-q", "--detach", "main")
    for number, name in pulls:
        message = f"Merge pull request #{number} from octo/{name}"
        git(repo, "merge", "-q", "--no-ff", "-m", message, name)
    head = git(repo, "rev-parse", "HEAD")
    number, name = pulls[-1]
    ref = f"gh-readonly-queue/main/pr-{number}-{git(repo, 'rev-parse', name)}"
    git(repo, "branch", ref, head)
    git(repo, "checkout", "-q", "main")
    return base, head, ref


def group_event(
    fake: FakeGitHub, base_sha: str, head_sha: str, ref: str, action: str = "checks_requested"
) -> dict[str, Any]:
    """The real merge_group example, pointed at the queue branch `ref` of REPO."""
    data = copy.deepcopy(payload("merge_group.checks_requested"))
    data["action"] = action
    if action == "destroyed":
        data["reason"] = "dequeued"
    data["merge_group"].update(
        head_sha=head_sha,
        head_ref=f"refs/heads/{ref}",
        base_sha=base_sha,
        base_ref="refs/heads/main",
    )
    data["repository"]["full_name"] = REPO
    data["repository"]["clone_url"] = f"{fake.url}/{REPO}.git"
    data["installation"] = {"id": fake.installation_id}
    return data


ADD_CODE_TEXT = "ALTER TABLE items ADD COLUMN IF NOT EXISTS code text;\n"
# Alone it adds `code` as an integer; after ADD_CODE_TEXT the column is text and the view's
# comparison fails: two fixes that pass alone and break together.
ADD_CODE_INTEGER = (
    "ALTER TABLE items ADD COLUMN IF NOT EXISTS code integer;\n"
    "CREATE OR REPLACE VIEW positive_codes AS SELECT id FROM items WHERE code > 0;\n"
)


def serve_group(
    fake: FakeGitHub, repo: Path, fixes: dict[str, dict[str, str]]
) -> tuple[str, str, str]:
    """REPO with pull requests 7, 8… from `fixes` (branch -> files) queued in that order."""
    fake.add_repo(REPO, repo)
    numbered = []
    for number, (name, files) in enumerate(fixes.items(), start=7):
        if name != "builder/add-name":  # inventory_repo's own builder branch
            branch(repo, name, files)
        fake.add_pull(REPO, number, head=name, user="builder-bot", title=f"Fix {name}")
        numbered.append((number, name))
    fake.set_permission(REPO, "builder-bot", "write")
    return queue(repo, numbered)


def test_a_green_merge_group_gets_its_status_on_the_group_head(fake_github, store, repo):
    fake = fake_github
    base, head, ref = serve_group(
        fake,
        repo,
        {"builder/add-name": {}, "builder/add-code": {"migrations/003_code.sql": ADD_CODE_TEXT}},
    )
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("merge_group", group_event(fake, base, head, ref))
        assert answer.status_code == 202, answer.text
        run = wait_run(store, answer.json()["run"])
    assert run["state"] == "done" and run["decision"] == "approve", run["detail"]
    assert [s["state"] for s in fake.statuses(REPO, head)] == ["pending", "success"]
    (check,) = fake.check_runs(REPO)
    assert check.data["head_sha"] == head and check.data["conclusion"] == "success"
    job = run["verdict"]["job"]
    assert (job["base_sha"], job["head_sha"], job["trigger"]) == (
        base,
        head,
        "merge_group.checks_requested",
    )
    assert [(m["pr_number"], m["ref"]) for m in job["batch"]] == [
        (7, "builder/add-name"),
        (8, "builder/add-code"),
    ]
    assert "merged in this order: #7 **builder/add-name**" in run["report"]
    assert "#8 **builder/add-code**" in run["report"]
    # The group is not a pull request: no comment on either of its pull requests.
    assert fake.comments(REPO, 7) == [] and fake.comments(REPO, 8) == []


def test_a_group_whose_fixes_break_each_other_fails(fake_github, store, repo):
    fake = fake_github
    base, head, ref = serve_group(
        fake,
        repo,
        {
            "builder/code-text": {"migrations/002_code.sql": ADD_CODE_TEXT},
            "builder/code-integer": {"migrations/003_code.sql": ADD_CODE_INTEGER},
        },
    )
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("merge_group", group_event(fake, base, head, ref))
        run = wait_run(store, answer.json()["run"])
    assert run["decision"] == "reject", run["detail"]
    final = fake.statuses(REPO, head)[-1]
    assert final["state"] == "failure"
    (check,) = fake.check_runs(REPO)
    assert check.data["conclusion"] == "failure"


def test_a_group_destroyed_before_a_worker_took_it_ends_with_a_final_status(
    fake_github, store, repo
):
    fake = fake_github
    base, head, ref = serve_group(fake, repo, {"builder/add-name": {}})
    with Running(make_service(fake, store), worker=False) as app:
        queued = app.deliver("merge_group", group_event(fake, base, head, ref))
        assert queued.status_code == 202
        gone = app.deliver("merge_group", group_event(fake, base, head, ref, "destroyed"))
        assert gone.status_code == 200 and gone.json()["runs"] == [queued.json()["run"]]
        statuses = wait_final(fake, head, timeout=30)  # posted by the sweep
    assert statuses[-1]["state"] == "error"
    assert statuses[-1]["description"] == "cancelled · the merge group was destroyed (dequeued)"
    (check,) = fake.check_runs(REPO)
    assert check.data["status"] == "completed" and check.data["conclusion"] == "cancelled"
    assert store.run(queued.json()["run"])["state"] == "error"


def test_a_group_destroyed_mid_run_is_cancelled_not_left_pending(fake_github, store, repo):
    fake = fake_github
    base, head, ref = serve_group(fake, repo, {"builder/add-name": {}})
    fake.delay("checks/create", 2.0, times=1)  # the run is busy when the group goes
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("merge_group", group_event(fake, base, head, ref))
        run_id = answer.json()["run"]
        deadline = time.monotonic() + 30
        while store.run(run_id)["state"] != "running":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        app.deliver("merge_group", group_event(fake, base, head, ref, "destroyed"))
        run = wait_run(store, run_id)
        time.sleep(1.0)  # whatever the stopped worker still does must not post over it
    assert run["state"] == "error" and run["verdict"] is None
    states = [s["state"] for s in fake.statuses(REPO, head)]
    assert states[0] == "pending" and states[-1] == "error" and "success" not in states
    # The sweep may post the end before the worker's check run exists: then both are
    # completed, none is left in progress.
    checks = fake.check_runs(REPO)
    assert checks and {(c.data["status"], c.data["conclusion"]) for c in checks} == {
        ("completed", "cancelled")
    }


def push_event(fake: FakeGitHub, name: str, sha: str) -> dict[str, Any]:
    """The real push example (a new branch), pointed at branch `name` of REPO at `sha`."""
    data = copy.deepcopy(payload("push.with-new-branch"))
    data["ref"], data["after"] = f"refs/heads/{name}", sha
    data["repository"]["full_name"] = REPO
    data["repository"]["clone_url"] = f"{fake.url}/{REPO}.git"
    data["installation"] = {"id": fake.installation_id}
    return data


def test_a_push_alone_validates_its_open_pull_request(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("push", push_event(fake, "builder/add-name", sha))
        assert answer.status_code == 202, answer.text
        run = wait_run(store, answer.json()["run"])
    assert run["state"] == "done" and run["decision"] == "approve", run["detail"]
    assert run["pr_number"] == 7
    assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending", "success"]
    (comment,) = fake.comments(REPO, 7)
    assert "Gatekeeper: APPROVE" in comment["body"]


def test_a_push_and_its_synchronize_validate_the_commit_once(served, store):
    fake = served
    sha = fake.state.repos[REPO].pulls[7].head_sha
    with Running(make_service(fake, store)) as app:
        first = app.deliver("pull_request", synchronize(fake, 7, fake.installation_id))
        validated = wait_run(store, first.json()["run"])
        second = app.deliver("push", push_event(fake, "builder/add-name", sha))
        echo = wait_run(store, second.json()["run"])
    assert validated["state"] == "done"
    assert echo["state"] == "ignored"
    assert echo["detail"] == f"#7 at {sha[:7]} is validated by run {validated['id']}"
    assert len(fake.check_runs(REPO)) == 1
    assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending", "success"]


def test_a_push_to_a_branch_without_an_open_pull_request_is_ignored(served, store, repo):
    fake = served
    sha = branch(repo, "builder/lonely", {"migrations/003_x.sql": ADD_CODE_TEXT})
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("push", push_event(fake, "builder/lonely", sha))
        run = wait_run(store, answer.json()["run"])
    assert run["state"] == "ignored"
    assert run["detail"] == f"no open pull request has {sha[:7]} as its head"
    assert fake.statuses(REPO, sha) == []
