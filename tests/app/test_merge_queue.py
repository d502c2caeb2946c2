"""Merge queues and pushes through the App: real `merge_group` and `push` payloads, retargeted
at a queue branch built as GitHub builds one (main, then each queued pull request merged in
order), delivered signed to the service, which validates on the fake GitHub.

A queue whose required check never reports stalls until GitHub times the group out, so every
test here ends on a final status of the group's head: success, failure, or the error of a
group GitHub destroyed. A rejected group names the pull request that broke it, found by
bisecting the queue's own merge commits; `guarded` is one repository (built once) whose
fixes each pass alone and two of which break an earlier fix's guard together.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app.service import SEARCHING
from bot.app.store import Store
from bot.engine.batch import find_culprit
from bot.github import events
from bot.github.pulls import group_chain
from bot.judging.verdict import Decision, Risk, Verdict
from tests.github.conftest import POLICY, REPO, commit_all
from tests.github.fake import FakeGitHub
from tests.github.test_client import make_client
from tests.helpers import commit, items_repo
from tests.helpers import run_git as git
from tests.migrating import test_alembic as alembic

from .test_service import Running, make_service, payload, synchronize, wait_final, wait_run


def branch(repo: Path, name: str, files: dict[str, str]) -> str:
    """A builder branch off main with `files` committed; returns its head SHA."""
    git(repo, "checkout", "-q", "-b", name, "main")
    for path, text in files.items():
        (repo / path).write_text(text)
    sha = commit_all(repo, f"fix: {name}")
    git(repo, "checkout", "-q", "main")
    return sha


def queue(repo: Path, pulls: list[tuple[int, str]], how: str = "merge") -> tuple[str, str, str]:
    """GitHub's queue branch for `pulls` (number, branch), each added in order onto main the
    way the queue's merge method does: a merge commit with the queue's message, a squashed
    commit whose subject ends in "(#n)", or the branch's commits rebased (`how`); returns
    (base_sha, head_sha, queue branch)."""
    base = git(repo, "rev-parse", "main")
    git(repo, "checkout", "-q", "--detach", "main")
    for number, name in pulls:
        if how == "merge":
            message = f"Merge pull request #{number} from octo/{name}"
            git(repo, "merge", "-q", "--no-ff", "-m", message, name)
        elif how == "squash":
            git(repo, "merge", "-q", "--squash", name)
            git(repo, "commit", "-q", "-m", f"Fix {name} (#{number})")
        else:
            git(repo, "cherry-pick", f"main..{name}")
    head = git(repo, "rev-parse", "HEAD")
    number, name = pulls[-1]
    ref = f"gh-readonly-queue/main/pr-{number}-{git(repo, 'rev-parse', name)}"
    git(repo, "branch", "--force", ref, head)  # GitHub rebuilds it when the group changes
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


def open_pulls(fake: FakeGitHub, repo: Path, names: list[str]) -> list[tuple[int, str]]:
    """REPO served from `repo`, with pull requests 7, 8… from the branches `names` by
    builder-bot, who may write; returns (number, branch) in that order."""
    fake.add_repo(REPO, repo)
    numbered = list(enumerate(names, start=7))
    for number, name in numbered:
        fake.add_pull(REPO, number, head=name, user="builder-bot", title=f"Fix {name}")
    fake.set_permission(REPO, "builder-bot", "write")
    return numbered


def serve_group(
    fake: FakeGitHub, repo: Path, fixes: dict[str, dict[str, str]]
) -> tuple[str, str, str]:
    """REPO with pull requests 7, 8… from `fixes` (branch -> files) queued in that order."""
    for name, files in fixes.items():
        if name != "builder/add-name":  # inventory_repo's own builder branch
            branch(repo, name, files)
    return queue(repo, open_pulls(fake, repo, list(fixes)))


def validate_group(
    fake: FakeGitHub, store: Store, base: str, head: str, ref: str
) -> dict[str, Any]:
    """The group's checks_requested delivered to a running App; its run once it ended."""
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("merge_group", group_event(fake, base, head, ref))
        return wait_run(store, answer.json()["run"])


# The regression guard of an earlier fix on main: a duplicate index slowed every write.
GUARD = """\
id: P1-ITEMS-002
title: items carries no duplicate index
kind: regression
bug_id: P1-ITEMS-002
steps:
  - id: no-duplicate-index
    title: no two indexes of items cover the same columns
    sql:
      query: >
        SELECT indkey::text AS columns FROM pg_index WHERE indrelid = 'items'::regclass
        GROUP BY indkey::text HAVING count(*) > 1
    expect: {rows: 0}
"""
# Each passes alone; the two indexes of items.label together break P1-ITEMS-002's guard.
GUARDED_FIXES = {
    "builder/label-index": {
        "migrations/002_label_index.sql": "CREATE INDEX IF NOT EXISTS items_lb ON items (label);\n"
    },
    "builder/label-lookup": {
        "migrations/003_label_lookup.sql": (
            "CREATE INDEX IF NOT EXISTS items_label_lookup ON items (label);\n"
        )
    },
    "builder/sku": {
        "migrations/004_sku.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS sku text;\n"
    },
    "builder/note": {
        "migrations/005_note.sql": "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"
    },
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main with items.label and the guard P1-ITEMS-002, and the branches of GUARDED_FIXES:
    built once, each test queues the groups it needs (the queue branches are the only writes)."""
    root = tmp_path_factory.mktemp("guarded")
    repo = items_repo(root, POLICY, "id bigint PRIMARY KEY, label text")
    git(repo, "config", "user.name", "Dev")
    git(repo, "config", "user.email", "dev@example.com")
    commit(repo, {"checks/P1-ITEMS-002.yml": GUARD}, "guard P1-ITEMS-002")
    for name, files in GUARDED_FIXES.items():
        branch(repo, name, files)
    return repo


def wait_state(store: Store, run_id: int, detail: str | None = None) -> None:
    """Until run `run_id` is running (and shows `detail`, when given)."""
    deadline = time.monotonic() + 60
    while (run := store.run(run_id))["state"] != "running" or detail not in (None, run["detail"]):
        assert time.monotonic() < deadline, f"run {run_id} is {run['state']}: {run['detail']}"
        time.sleep(0.05)


def test_green_groups_get_their_status_on_their_heads_a_longer_one_after_the_first(
    fake_github, store, guarded
):
    """The queue grows: a group of three is requested while the group of its first two
    runs. Each group is what lands if the queue merges up to it, so neither supersedes the
    other: the first ends with its own final status, then the second is validated whole."""
    fake = fake_github
    pulls = open_pulls(fake, guarded, ["builder/label-index", "builder/sku", "builder/note"])
    base, first_head, first_ref = queue(guarded, pulls[:2])
    _, head, ref = queue(guarded, pulls)
    with Running(make_service(fake, store)) as app:
        first = app.deliver("merge_group", group_event(fake, base, first_head, first_ref))
        assert first.status_code == 202, first.text
        wait_state(store, first.json()["run"])
        second = app.deliver("merge_group", group_event(fake, base, head, ref))
        runs = [wait_run(store, answer.json()["run"]) for answer in (first, second)]
    for run, sha, numbers in zip(runs, (first_head, head), ([7, 8], [7, 8, 9]), strict=True):
        assert run["state"] == "done" and run["decision"] == "approve", run["detail"]
        assert [s["state"] for s in fake.statuses(REPO, sha)] == ["pending", "success"]
        job = run["verdict"]["job"]
        assert (job["base_sha"], job["head_sha"], job["trigger"]) == (
            base,
            sha,
            "merge_group.checks_requested",
        )
        assert [m["pr_number"] for m in job["batch"]] == numbers
    checks = {c.data["head_sha"]: c.data["conclusion"] for c in fake.check_runs(REPO)}
    assert checks == {first_head: "success", head: "success"}
    report = runs[1]["report"]
    assert "merged in this order: #7 **builder/label-index**" in report
    assert "#8 **builder/sku**" in report and "#9 **builder/note**" in report
    # A group is not a pull request: no comment on any of its pull requests.
    assert all(fake.comments(REPO, n) == [] for n in (7, 8, 9))


def test_a_group_whose_fixes_break_each_other_fails_naming_the_culprit(fake_github, store, repo):
    """Two migrations touching one column: each passes alone, the second fails after the
    first. The group's check run names it, and so does a comment on its pull request."""
    fake = fake_github
    base, head, ref = serve_group(
        fake,
        repo,
        {
            "builder/code-text": {"migrations/002_code.sql": ADD_CODE_TEXT},
            "builder/code-integer": {"migrations/003_code.sql": ADD_CODE_INTEGER},
        },
    )
    run = validate_group(fake, store, base, head, ref)
    assert run["decision"] == "reject", run["detail"]
    final = fake.statuses(REPO, head)[-1]
    assert final["state"] == "failure"
    (check,) = fake.check_runs(REPO)
    assert check.data["conclusion"] == "failure"
    named = "culprit: #8 builder/code-integer passes alone, fails after #7 builder/code-text: "
    assert run["verdict"]["reasons"][0].startswith(named)
    assert f"- {named}" in check.data["output"]["summary"]
    assert [t["heads"] for t in run["verdict"]["evidence"]["batch"]["tried"]] == [
        "#7 builder/code-text + #8 builder/code-integer",
        "#7 builder/code-text",
        "#8 builder/code-integer",
    ]
    (comment,) = fake.comments(REPO, 8)
    assert comment["body"].startswith(f"<!-- gatekeeper:merge-group {head} -->")
    assert "passes alone, fails after #7 builder/code-text" in comment["body"]
    assert fake.comments(REPO, 7) == []


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
        wait_state(store, run_id)
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


def test_a_group_that_breaks_a_guard_names_and_tells_the_pull_request(fake_github, store, guarded):
    """#8 passes alone, and on top of #7 it breaks an earlier fix's guard: the bisection over
    the queue's own commits (#7, then #7 + #8) and #8 alone name it, on the group's check run,
    in its report and in a comment on #8; the pull requests that did nothing hear nothing."""
    fake = fake_github
    pulls = open_pulls(
        fake, guarded, ["builder/label-index", "builder/label-lookup", "builder/sku"]
    )
    base, head, ref = queue(guarded, pulls)
    run = validate_group(fake, store, base, head, ref)
    assert run["decision"] == "reject", run["detail"]
    named = (
        "culprit: #8 builder/label-lookup passes alone, breaks P1-ITEMS-002's guard after "
        "#7 builder/label-index: reject: P1-ITEMS-002/no-duplicate-index failed"
    )
    assert run["verdict"]["reasons"][0].startswith(named)
    assert named in run["report"]
    found = run["verdict"]["evidence"]["batch"]
    assert (found["culprit"], found["pr_number"], found["fails_alone"]) == (
        "builder/label-lookup",
        8,
        False,
    )
    # The group's run made the base; the search's three runs restored it.
    assert [(t["heads"], t["decision"], t["base"]) for t in found["tried"]] == [
        ("#7 builder/label-index + #8 builder/label-lookup + #9 builder/sku", "reject", "made"),
        ("#7 builder/label-index", "approve", "restored"),
        ("#7 builder/label-index + #8 builder/label-lookup", "reject", "restored"),
        ("#8 builder/label-lookup", "approve", "restored"),
    ]
    assert [s["state"] for s in fake.statuses(REPO, head)] == ["pending", "failure"]
    (check,) = fake.check_runs(REPO)
    assert check.data["conclusion"] == "failure" and named in check.data["output"]["summary"]
    (comment,) = fake.comments(REPO, 8)
    assert comment["body"].startswith(f"<!-- gatekeeper:merge-group {head} -->")
    assert f"breaks merge group `{head[:7]}` into `main`" in comment["body"]
    assert named.removeprefix("culprit: ") in comment["body"]
    assert fake.comments(REPO, 7) == [] and fake.comments(REPO, 9) == []


@pytest.mark.parametrize(("how", "numbers"), [("squash", [7, 8]), ("rebase", [8])])
def test_the_queue_steps_are_the_prefixes_only_when_each_names_its_pull_request(
    fake_github, guarded, how, numbers
):
    """A squashing queue writes one commit per pull request, "(#n)" in its subject: those are
    the prefixes. A rebasing one writes the branch's own commits, which name nothing: its
    group is not bisected (the search says why instead of blaming the wrong pull request)."""
    fake = fake_github
    pulls = open_pulls(fake, guarded, ["builder/label-index", "builder/sku"])
    base, head, ref = queue(guarded, pulls, how)
    target = events.route("merge_group", group_event(fake, base, head, ref))
    assert isinstance(target, events.Target)
    chain = group_chain(guarded, target, make_client(fake), events.to_job(target, base))
    assert [m.pr_number for m in chain.heads] == numbers
    if how == "squash":
        assert chain.commits == [git(guarded, "rev-parse", f"{head}~1"), head]
        return
    assert chain.commits == []
    rejected = Verdict(decision=Decision.reject, risk=Risk.high, summary="reject: it broke")
    found = find_culprit(chain, lambda *_: pytest.fail("nothing to validate"), rejected)
    assert found == "the culprit search needs one merge commit per change of the batch; not found"


def test_a_group_with_two_alembic_heads_names_the_second(fake_github, store, tmp_path):
    """Two revisions on the same parent: each is one head alone, two heads together, and
    `alembic upgrade head` refuses to run. The group is rejected at migrate.heads and the
    search names the pull request that added the second head."""
    fake = fake_github
    repo = alembic.main_branch(tmp_path, "INSERT INTO account (name) VALUES ('first admin');\n")
    git(repo, "config", "user.name", "Dev")
    git(repo, "config", "user.email", "dev@example.com")
    # Each fix adds a column its models do not name: the models check is not this test's.
    policy = alembic.POLICY.replace("python: ", "check_models: false, python: ")
    commit(repo, {".github/gatekeeper.yml": policy}, "models unchecked")
    note = alembic.revision(
        "0003",
        "0001",
        'op.add_column("account", sa.Column("note", sa.Text))',
        'op.drop_column("account", "note")',
    )
    email = alembic.revision("0002", "0001", alembic.EMAIL, alembic.DROP_EMAIL)
    base, head, ref = serve_group(
        fake,
        repo,
        {
            "builder/email": {"alembic/versions/0002_email.py": email},
            "builder/note": {"alembic/versions/0003_note.py": note},
        },
    )
    run = validate_group(fake, store, base, head, ref)
    assert run["decision"] == "reject", run["detail"]
    heads = next(c for c in run["verdict"]["criteria"] if c["id"] == "migrate.heads")
    assert heads["status"] == "failed" and "0003_note.py" in heads["evidence"]
    named = "culprit: #8 builder/note passes alone, fails after #7 builder/email: "
    assert run["verdict"]["reasons"][0].startswith(named)
    assert fake.statuses(REPO, head)[-1]["state"] == "failure"
    (comment,) = fake.comments(REPO, 8)
    assert "passes alone, fails after #7 builder/email" in comment["body"]
    assert fake.comments(REPO, 7) == []


def test_a_group_destroyed_mid_search_is_cancelled_not_left_pending(fake_github, store, guarded):
    """GitHub dequeues the group while its culprit search runs: the search stops like a
    run does, the group ends cancelled, and no pull request is blamed."""
    fake = fake_github
    pulls = open_pulls(fake, guarded, ["builder/label-index", "builder/label-lookup"])
    base, head, ref = queue(guarded, pulls)
    with Running(make_service(fake, store)) as app:
        answer = app.deliver("merge_group", group_event(fake, base, head, ref))
        run_id = answer.json()["run"]
        wait_state(store, run_id, SEARCHING)
        app.deliver("merge_group", group_event(fake, base, head, ref, "destroyed"))
        run = wait_run(store, run_id)
        time.sleep(1.0)  # whatever the stopped search still does must not post over it
    assert run["state"] == "error" and run["verdict"] is None
    states = [s["state"] for s in fake.statuses(REPO, head)]
    assert states == ["pending", "error"], states
    assert fake.statuses(REPO, head)[-1]["description"] == (
        "cancelled · the merge group was destroyed (dequeued)"
    )
    (check,) = fake.check_runs(REPO)
    assert (check.data["status"], check.data["conclusion"]) == ("completed", "cancelled")
    assert fake.comments(REPO, 8) == []


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
