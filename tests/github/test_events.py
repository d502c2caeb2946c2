"""bot.github.events against real GitHub webhook payloads (octokit/webhooks examples, see
SOURCE.md).

Upstream has no merged pull_request.closed, no issue_comment on a pull request, no pull request
from a fork and no draft opened: the tests below that need one derive it from a copy of a real
payload and say which fields they changed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.github.events import (
    GroupDestroyed,
    Ignored,
    NeedsPullRequest,
    PayloadError,
    Target,
    check_branches,
    is_builder,
    is_target,
    queue_pull_number,
    route,
    target_from_pull_request,
    to_job,
    trusted,
)
from bot.policy.model import Branches
from tests.helpers import WEBHOOKS

REPO = "Codertocat/Hello-World"
CLONE_URL = "https://github.com/Codertocat/Hello-World.git"
PR_HEAD_SHA = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
PR_BASE_SHA = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
MERGE_SHA = "c4295bd74fb0f4fda03689c3df3f2803b658fd85"


def _pr_target(trigger: str, **changes: Any) -> Target:
    """Every pull_request fixture is Codertocat's pull request #2, changes -> master; `changes`
    are the fields another event's payload tells otherwise."""
    fields: dict[str, Any] = {
        "repository": REPO,
        "installation_id": 1,
        "pr_number": 2,
        "base_ref": "master",
        "head_ref": "changes",
        "base_sha": PR_BASE_SHA,
        "head_sha": PR_HEAD_SHA,
        "head_repository": REPO,
        "author": "Codertocat",
        "author_association": "OWNER",
        "clone_url": CLONE_URL,
        "trigger": trigger,
        "delivery_id": "delivery-1",
    }
    return Target(**{**fields, **changes})


# Both merge_group examples: octo-org/octo-repo's queue on main, its last pull request #104.
GROUP = Target(
    repository="octo-org/octo-repo",
    installation_id=1,
    pr_number=None,
    base_ref="main",
    head_ref="gh-readonly-queue/main/pr-104-929f8209d40f77f4abc622a499c93a83babdbe64",
    base_sha="380387fbc80638b734a49e1be1c4dfec1c01b33c",
    head_sha="2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d",
    head_repository="octo-org/octo-repo",
    author="Codertocat",
    author_association=None,
    clone_url="https://github.com/octo-org/octo-repo.git",
    trigger="merge_group.checks_requested",
    merge_group=True,
    delivery_id="delivery-1",
)


# Every fixture file and what route() makes of it. A new file fails
# test_every_fixture_has_an_expectation until it is added here.
EXPECTED: dict[str, Target | Ignored | NeedsPullRequest] = {
    "check_run.requested_action.json": Ignored(
        reason="requested action 'lgtm|26764' is not 'rerun'"
    ),
    "check_run.rerequested.json": Ignored(reason="no pull request for this check suite"),
    "check_suite.requested.json": Ignored(reason="no pull request for this check suite"),
    # The same pull request; a check suite names neither its author nor the association.
    "check_suite.rerequested.json": _pr_target(
        "check_suite.rerequested", installation_id=957387, author=None, author_association=None
    ),
    "installation.created.json": Ignored(reason="installation events need no validation"),
    "installation.deleted.json": Ignored(reason="installation events need no validation"),
    "installation_repositories.added.json": Ignored(
        reason="installation_repositories events need no validation"
    ),
    "issue_comment.created.with-installation.json": Ignored(
        reason="comment on an issue, not a pull request"
    ),
    "ping.json": Ignored(reason="ping"),
    "ping.with-app_id.json": Ignored(reason="ping"),
    "pull_request.closed.json": Ignored(reason="pull request closed without merging"),
    "pull_request.converted_to_draft.with-installation.json": Ignored(
        reason="pull_request action 'converted_to_draft' needs no validation"
    ),
    "pull_request.labeled.json": Ignored(
        reason="pull_request action 'labeled' needs no validation"
    ),
    "pull_request.opened.json": _pr_target("pull_request.opened"),
    "pull_request.opened.with-null-body.json": _pr_target("pull_request.opened"),
    "pull_request.ready_for_review.with-installation.json": _pr_target(
        "pull_request.ready_for_review"
    ),
    "pull_request.reopened.json": _pr_target("pull_request.reopened"),
    "pull_request.synchronize.json": _pr_target("pull_request.synchronize"),
    "pull_request_review.submitted.json": Ignored(
        reason="pull_request_review events need no validation"
    ),
    # Both delete the tag simple-tag.
    "push.json": Ignored(reason="'refs/tags/simple-tag' is not a branch"),
    "push.with-installation.json": Ignored(reason="'refs/tags/simple-tag' is not a branch"),
    # A push names no pull request: no number, no base until the caller finds them.
    "push.with-new-branch.json": _pr_target(
        "push",
        pr_number=None,
        base_ref=None,
        head_ref="master",
        base_sha=None,
        head_sha="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        author_association=None,
        needs_pr_lookup=True,
    ),
    # A merge queue's group: its head (what lands on main) against its base, status on the head.
    "merge_group.checks_requested.json": GROUP,
    "merge_group.checks_requested.with-repository-properties.json": GROUP,
    "status.json": Ignored(reason="status events need no validation"),
    "workflow_dispatch.json": Ignored(reason="workflow_dispatch events need no validation"),
    "workflow_run.completed.with-pull-requests.json": Ignored(
        reason="workflow_run events need no validation"
    ),
}


def _fixture_dir() -> Path:
    if not WEBHOOKS.is_dir():
        pytest.fail(
            f"webhook fixtures not found at {WEBHOOKS} (copies of shared/fixtures/github/webhooks)",
            pytrace=False,
        )
    return WEBHOOKS


def load(name: str) -> dict[str, Any]:
    """A fresh copy of a fixture payload, safe to edit."""
    return json.loads((_fixture_dir() / name).read_text())


def event_of(name: str) -> str:
    """The X-GitHub-Event of a fixture: its name up to the first dot."""
    return name.split(".", 1)[0]


def test_every_fixture_has_an_expectation() -> None:
    files = {path.name for path in _fixture_dir().glob("*.json")}
    assert files == set(EXPECTED), "fixture files and EXPECTED differ"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_routes_as_expected(name: str) -> None:
    assert route(event_of(name), load(name), "delivery-1") == EXPECTED[name]


# --- pull_request


def test_merged_close_revalidates_the_target_at_the_merge_commit() -> None:
    # Derived: pull_request.closed.json with merged: true and a builder head branch.
    payload = load("pull_request.closed.json")
    payload["pull_request"]["merged"] = True
    payload["pull_request"]["head"]["ref"] = "builder/fix-1"
    result = route("pull_request", payload)
    assert isinstance(result, Target)
    assert result.merged
    assert result.head_sha == MERGE_SHA
    assert (result.base_ref, result.head_ref, result.base_sha) == ("master", "builder/fix-1", None)
    assert result.trigger == "pull_request.closed"
    assert check_branches(result, Branches(target=["master"])) == result


def test_merged_close_of_a_non_builder_branch_is_ignored_by_the_branch_check() -> None:
    # Derived: pull_request.closed.json with merged: true (head stays 'changes').
    payload = load("pull_request.closed.json")
    payload["pull_request"]["merged"] = True
    result = route("pull_request", payload)
    assert isinstance(result, Target)
    assert check_branches(result, Branches(target=["master"])) == Ignored(
        reason="head branch 'changes' is not a builder branch (builder/*)"
    )


def test_merged_close_without_merge_commit_is_a_payload_error() -> None:
    # Derived: pull_request.closed.json with merged: true and merge_commit_sha null.
    payload = load("pull_request.closed.json")
    payload["pull_request"]["merged"] = True
    payload["pull_request"]["merge_commit_sha"] = None
    with pytest.raises(PayloadError, match=r"^pull_request\.merge_commit_sha missing$"):
        route("pull_request", payload)


@pytest.mark.parametrize("action", ["opened", "reopened", "synchronize"])
def test_draft_pull_requests_are_ignored(action: str) -> None:
    # Derived: pull_request.opened.json with draft: true and the action changed.
    payload = load("pull_request.opened.json")
    payload["action"] = action
    payload["pull_request"]["draft"] = True
    assert route("pull_request", payload) == Ignored(reason="draft pull request")


def test_ready_for_review_is_validated_even_if_the_payload_says_draft() -> None:
    # Derived: pull_request.ready_for_review.with-installation.json with draft: true.
    payload = load("pull_request.ready_for_review.with-installation.json")
    payload["pull_request"]["draft"] = True
    assert route("pull_request", payload, "delivery-1") == _pr_target(
        "pull_request.ready_for_review"
    )


@pytest.mark.parametrize(
    ("event", "payload", "action"),
    [
        # Derived: upstream has no pull_request.edited; opened.json with the action changed.
        pytest.param("pull_request", lambda: load("pull_request.opened.json"), "edited", id="pr"),
        # Derived: check_suite.rerequested.json with action completed.
        pytest.param(
            "check_suite", lambda: load("check_suite.rerequested.json"), "completed", id="suite"
        ),
        # Derived: a command comment on a pull request (see _pr_comment), edited.
        pytest.param(
            "issue_comment", lambda: _pr_comment("/gatekeeper run"), "edited", id="comment"
        ),
    ],
)
def test_an_action_that_needs_no_validation_is_ignored_naming_it(
    event: str, payload: Callable[[], dict[str, Any]], action: str
) -> None:
    changed = payload()
    changed["action"] = action
    assert route(event, changed) == Ignored(reason=f"{event} action '{action}' needs no validation")


def test_fork_pull_request_is_routed_but_not_trusted() -> None:
    # Derived: pull_request.opened.json with the head in a fork and a contributor as author.
    payload = load("pull_request.opened.json")
    payload["pull_request"]["head"]["repo"]["full_name"] = "contributor/Hello-World"
    payload["pull_request"]["user"]["login"] = "contributor"
    payload["pull_request"]["author_association"] = "FIRST_TIME_CONTRIBUTOR"
    result = route("pull_request", payload)
    assert isinstance(result, Target)
    assert (result.repository, result.head_repository) == (REPO, "contributor/Hello-World")
    assert (result.author, result.author_association) == ("contributor", "FIRST_TIME_CONTRIBUTOR")
    assert result.clone_url == CLONE_URL
    assert not trusted(result)


def test_fork_whose_head_repository_was_deleted_is_ignored() -> None:
    # Derived: pull_request.synchronize.json with head.repo null, as GitHub sends it then.
    payload = load("pull_request.synchronize.json")
    payload["pull_request"]["head"]["repo"] = None
    assert route("pull_request", payload) == Ignored(
        reason="the pull request's head repository was deleted"
    )


def test_pull_request_target_routes_like_pull_request() -> None:
    # Actions names the event pull_request_target; the payload is a pull_request one.
    result = route("pull_request_target", load("pull_request.synchronize.json"), "delivery-1")
    assert result == _pr_target("pull_request_target.synchronize")


# --- push


def test_push_deleting_a_branch_is_ignored() -> None:
    # Derived: push.with-new-branch.json turned into the deletion of that branch.
    payload = load("push.with-new-branch.json")
    payload.update(deleted=True, created=False, after="0" * 40)
    assert route("push", payload) == Ignored(reason="branch 'master' was deleted")


def test_push_target_has_no_base_until_its_pull_request_is_found() -> None:
    # Derived: push.with-new-branch.json pushing a builder branch.
    payload = load("push.with-new-branch.json")
    payload["ref"] = "refs/heads/builder/fix-1"
    result = route("push", payload)
    assert isinstance(result, Target)
    assert result.needs_pr_lookup
    assert check_branches(result, Branches()) == result
    assert not trusted(result)  # no author_association in a push: the caller checks
    with pytest.raises(ValueError, match="look up its pull request"):
        to_job(result, PR_BASE_SHA)


# --- check_suite / check_run


def test_check_run_rerun_action_validates_the_suites_pull_request() -> None:
    # Derived: check_run.requested_action.json with identifier "rerun".
    payload = load("check_run.requested_action.json")
    payload["requested_action"]["identifier"] = "rerun"
    result = route("check_run", payload)
    assert isinstance(result, Target)
    assert (result.repository, result.head_repository) == ("electron/electron", "electron/electron")
    assert result.pr_number == 26764
    assert (result.base_ref, result.head_ref) == ("master", "miniak/event-process-id")
    assert result.head_sha == "5bd5f196a46b8222fb7484f05faba41a73cf34bd"
    assert result.base_sha == "45eee468647309e9e6cdb2a88a3b460a59771fef"
    assert result.trigger == "check_run.requested_action"
    assert result.installation_id == 690857
    assert not trusted(result)  # the suite does not name the author: the caller checks


# --- issue_comment


def _pr_comment(body: str) -> dict[str, Any]:
    """Derived: issue_comment.created.with-installation.json on a pull request (the issue gets
    the `pull_request` object GitHub adds to pull requests' issues) with the given body."""
    payload = load("issue_comment.created.with-installation.json")
    payload["issue"]["pull_request"] = {
        "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1",
        "html_url": "https://github.com/Codertocat/Hello-World/pull/1",
    }
    payload["comment"]["body"] = body
    return payload


@pytest.mark.parametrize(
    ("body", "command"),
    [
        ("/gatekeeper run", "run"),
        ("/gatekeeper run\r\nThe migration was fixed.", "run"),
        ("  /gatekeeper   ok-to-test  \n", "ok-to-test"),
    ],
)
def test_command_comment_on_a_pull_request_needs_the_pull_request(body: str, command: str) -> None:
    result = route("issue_comment", _pr_comment(body), "delivery-1")
    assert result == NeedsPullRequest(
        repository=REPO,
        installation_id=1,
        pr_number=1,
        trigger=f"comment:/gatekeeper {command}",
        commenter="Codertocat",
        commenter_association="OWNER",
        command=command,
        delivery_id="delivery-1",
    )


@pytest.mark.parametrize(
    "body",
    ["/gatekeeper", "/gatekeeper runs", "please /gatekeeper run", "LGTM\n/gatekeeper run", ""],
)
def test_other_comments_on_a_pull_request_are_ignored(body: str) -> None:
    assert route("issue_comment", _pr_comment(body)) == Ignored(
        reason="comment is not /gatekeeper run or /gatekeeper ok-to-test"
    )


def test_command_comment_on_an_issue_is_ignored() -> None:
    # Derived: the real issue comment (on an issue) with a command as its body.
    payload = load("issue_comment.created.with-installation.json")
    payload["comment"]["body"] = "/gatekeeper run"
    assert route("issue_comment", payload) == Ignored(
        reason="comment on an issue, not a pull request"
    )


def test_target_from_the_fetched_pull_request() -> None:
    # The REST pull request has the shape of a webhook's pull_request object.
    pr_json = load("pull_request.opened.json")["pull_request"]
    result = target_from_pull_request(pr_json, REPO, 1, "comment:/gatekeeper run", "delivery-1")
    assert result == _pr_target("comment:/gatekeeper run")


def test_target_from_a_draft_pull_request_is_an_explicit_request() -> None:
    pr_json = load("pull_request.converted_to_draft.with-installation.json")["pull_request"]
    result = target_from_pull_request(pr_json, REPO, 1, "comment:/gatekeeper run")
    assert isinstance(result, Target)
    assert result.head_sha == PR_HEAD_SHA


@pytest.mark.parametrize(("merged", "word"), [(False, "closed"), (True, "merged")])
def test_target_from_a_closed_pull_request_is_ignored(merged: bool, word: str) -> None:
    # Derived: closed.json's pull request, with merged set as given.
    pr_json = load("pull_request.closed.json")["pull_request"]
    pr_json["merged"] = merged
    result = target_from_pull_request(pr_json, REPO, 1, "comment:/gatekeeper run")
    assert result == Ignored(reason=f"pull request #2 is {word}")


# --- malformed payloads


def test_missing_head_sha_names_the_field() -> None:
    payload = load("pull_request.synchronize.json")
    del payload["pull_request"]["head"]["sha"]
    with pytest.raises(PayloadError, match=r"^pull_request\.head\.sha missing$"):
        route("pull_request", payload)


@pytest.mark.parametrize("number", ["2", 2.5, True, None])
def test_wrong_type_of_number_names_the_field(number: object) -> None:
    payload = load("pull_request.opened.json")
    payload["pull_request"]["number"] = number
    with pytest.raises(PayloadError, match=r"^pull_request\.number invalid: "):
        route("pull_request", payload)


@pytest.mark.parametrize("payload", [None, [], "{}", 42])
def test_non_object_payload(payload: object) -> None:
    with pytest.raises(PayloadError, match=r"^payload is not a JSON object$"):
        route("ping", payload)


def test_non_object_part_names_the_field() -> None:
    payload = load("pull_request.opened.json")
    payload["pull_request"]["head"] = ["changes"]
    with pytest.raises(PayloadError, match=r"^pull_request\.head is not an object$"):
        route("pull_request", payload)


def test_check_suite_pull_request_fields_are_named_with_their_index() -> None:
    payload = load("check_suite.rerequested.json")
    del payload["check_suite"]["pull_requests"][0]["base"]["sha"]
    with pytest.raises(PayloadError, match=r"^check_suite\.pull_requests\[0\]\.base\.sha missing$"):
        route("check_suite", payload)


def test_missing_action_names_the_field() -> None:
    payload = load("issue_comment.created.with-installation.json")
    del payload["action"]
    with pytest.raises(PayloadError, match=r"^action missing$"):
        route("issue_comment", payload)


def test_fetched_pull_request_errors_are_prefixed() -> None:
    with pytest.raises(PayloadError, match=r"pull_request\.head missing"):
        target_from_pull_request({"number": 2}, REPO, None, "push")
    with pytest.raises(PayloadError, match=r"^pull_request is not a JSON object$"):
        target_from_pull_request(None, REPO, None, "push")


def _mutations(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every key and list index path in a JSON document."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        yield (*path, key)
        if isinstance(value, dict | list):
            yield from _mutations(value, (*path, key))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_any_mangled_field_gives_a_result_or_payload_error(name: str) -> None:
    """Never a KeyError or TypeError: each field deleted, or replaced by a value of the wrong
    type, either does not matter or raises PayloadError."""
    original = load(name)
    for path in _mutations(original):
        for replacement in (None, 7, [], "x", {}):
            payload = copy.deepcopy(original)
            parent = payload
            for step in path[:-1]:
                parent = parent[step]
            if replacement is None and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = replacement
            try:
                result = route(event_of(name), payload)
            except PayloadError:
                continue
            assert isinstance(result, Target | Ignored | NeedsPullRequest)


# --- branches, trust, jobs


@pytest.mark.parametrize(
    ("branch", "builder"),
    [
        ("builder/fix-1", True),
        ("builder/team/fix-1", True),
        ("builder", False),
        ("Builder/fix-1", False),
        ("feature/x", False),
        ("main", False),
    ],
)
def test_is_builder_with_the_default_globs(branch: str, builder: bool) -> None:
    assert is_builder(branch, Branches()) is builder


def test_globs_with_several_patterns() -> None:
    branches = Branches(builder=["builder/*", "hotfix-?"], target=["main", "release/*"])
    assert is_builder("hotfix-1", branches)
    assert not is_builder("hotfix-12", branches)
    assert is_target("main", branches)
    assert is_target("release/2.0", branches)
    assert not is_target("develop", branches)
    assert not is_target("builder/main", branches)


def _target(**changes: Any) -> Target:
    return _pr_target("pull_request.opened").model_copy(update=changes)


def test_check_branches_reasons() -> None:
    branches = Branches(builder=["builder/*"], target=["main"])
    good = _target(head_ref="builder/fix-1", base_ref="main")
    assert check_branches(good, branches) == good
    assert check_branches(_target(head_ref="feature/x", base_ref="main"), branches) == Ignored(
        reason="head branch 'feature/x' is not a builder branch (builder/*)"
    )
    assert check_branches(_target(head_ref="builder/fix-1", base_ref="develop"), branches) == (
        Ignored(reason="base 'develop' is not a target branch (main)")
    )
    none = Branches(builder=[], target=["main", "release/*"])
    assert check_branches(good, none) == Ignored(
        reason="head branch 'builder/fix-1' is not a builder branch (none configured)"
    )


@pytest.mark.parametrize(
    ("association", "expected"),
    [
        ("OWNER", True),
        ("MEMBER", True),
        ("COLLABORATOR", True),
        ("CONTRIBUTOR", False),
        ("FIRST_TIME_CONTRIBUTOR", False),
        ("FIRST_TIMER", False),
        ("NONE", False),
        (None, False),
    ],
)
def test_trusted_same_repository_by_association(association: str | None, expected: bool) -> None:
    assert trusted(_target(author_association=association)) is expected


def test_fork_is_not_trusted_even_for_an_owner() -> None:
    assert not trusted(_target(head_repository="someone/Hello-World"))


def test_repository_names_compare_case_insensitively() -> None:
    assert trusted(_target(head_repository="codertocat/hello-world"))


def test_merged_target_is_trusted_even_from_a_fork_contributor() -> None:
    # The merge was made by someone with write access; the code is the target branch's now.
    assert trusted(_target(merged=True, author_association="CONTRIBUTOR"))


def test_to_job() -> None:
    target = _target(head_ref="builder/fix-1")
    job = to_job(target, "b" * 40)
    assert job.repository == REPO
    assert (job.base_ref, job.head_ref) == ("master", "builder/fix-1")
    assert (job.base_sha, job.head_sha) == ("b" * 40, PR_HEAD_SHA)
    assert (job.pr_number, job.author, job.trigger) == (2, "Codertocat", "pull_request.opened")


# -- merge queues ---------------------------------------------------------------------------


def test_a_destroyed_merge_group_asks_to_end_its_run() -> None:
    """Derived: upstream has no `destroyed` example; the checks_requested one with GitHub's
    `destroyed` action and its `reason`."""
    payload = load("merge_group.checks_requested.json")
    payload["action"], payload["reason"] = "destroyed", "dequeued"
    assert route("merge_group", payload, "delivery-1") == GroupDestroyed(
        repository="octo-org/octo-repo",
        installation_id=1,
        head_ref=GROUP.head_ref,
        head_sha=GROUP.head_sha,
        reason="dequeued",
        delivery_id="delivery-1",
    )


def test_a_merge_group_without_its_head_sha_names_the_field() -> None:
    payload = load("merge_group.checks_requested.json")
    del payload["merge_group"]["head_sha"]
    with pytest.raises(PayloadError, match=r"merge_group\.head_sha missing"):
        route("merge_group", payload)


def test_a_merge_group_into_a_target_is_work_whatever_its_branch_is_called() -> None:
    """The queue's branch is no builder branch: the group is what lands on the target."""
    branches = Branches(builder=["builder/*"], target=["main"])
    assert check_branches(GROUP, branches) == GROUP
    assert trusted(GROUP)
    other = GROUP.model_copy(update={"base_ref": "release"})
    assert check_branches(other, branches) == Ignored(
        reason="base 'release' is not a target branch (main)"
    )


@pytest.mark.parametrize(
    ("ref", "number"),
    [
        ("gh-readonly-queue/main/pr-104-929f8209d40f77f4abc622a499c93a83babdbe64", 104),
        ("refs/heads/gh-readonly-queue/release/v2/pr-7-" + "a" * 40, 7),
        ("builder/pr-104-929f8209d40f77f4abc622a499c93a83babdbe64", None),
        ("gh-readonly-queue/main/pr-104-929f82", None),
    ],
)
def test_the_queue_branch_names_its_last_pull_request(ref: str, number: int | None) -> None:
    assert queue_pull_number(ref) == number
