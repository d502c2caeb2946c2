"""GitHub events -> work: the one place that decides whether a webhook means "validate this".

The webhook service and the GitHub Actions entry point (which reads the same payloads from
`$GITHUB_EVENT_PATH`) both call `route`, so the mapping from (event, action) to work exists
once. `route` returns one of:

- `Target`: what to validate, read from the payload alone;
- `NeedsPullRequest`: a `/gatekeeper` command in a pull request comment. The comment payload
  has no head sha, so the caller fetches the pull request and calls `target_from_pull_request`;
- `Ignored`: not work, with the reason (logged, and shown to whoever asks why nothing ran);
- `GroupDestroyed`: a merge queue dropped a merge group; its run, if any, must end now with a
  final status (GitHub will not look at it again, and a pending one would stay forever).

A payload that lacks a field this module reads, or has it with the wrong type, raises
`PayloadError` naming the field: callers catch one exception type instead of the KeyError or
TypeError a dict lookup would raise somewhere deep inside. Only the parts read here are
modelled, and unknown keys are ignored, because GitHub adds fields over time.

After `route`, callers apply `check_branches` (the repository's policy decides which branches
are builders and targets) and `trusted` (may this code run without a maintainer's consent),
then `to_job`. All of it is pure: no network, no FastAPI, no PyGithub.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bot.engine.job import Job
from bot.policy.model import Branches

_ZERO_SHA = "0" * 40
# Associations that imply write access to the repository (GitHub's author_association values).
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
# Events that arrive because the App or workflow subscribes to them, but are never work.
_NOT_WORK_EVENTS = frozenset(
    {
        "installation",
        "installation_repositories",
        "installation_target",
        "status",
        "workflow_run",
        "workflow_dispatch",
        "pull_request_review",
    }
)
_OPEN_ACTIONS = frozenset({"opened", "reopened", "synchronize", "ready_for_review"})
# The branch a merge queue builds a group on: the base, then the last pull request of the group
# and its head SHA (GitHub's naming, e.g. gh-readonly-queue/main/pr-104-929f82...).
_QUEUE_REF = re.compile(
    r"gh-readonly-queue/(?P<base>.+)/pr-(?P<number>[0-9]+)-(?P<sha>[0-9a-f]{40})"
)

Command = Literal["run", "ok-to-test"]


class PayloadError(ValueError):
    """The payload lacks a field that is read, or has it with the wrong type.

    The message names the field path (e.g. "pull_request.head.sha missing"), so the service
    can answer 400 with it and a maintainer sees which field a proxy or a test mangled.
    """


class Target(BaseModel):
    """What to validate, as far as the event tells.

    Fields the payload does not carry are None, and the caller resolves them: `base_sha` (from
    the base branch), `author`/`author_association` (check and push events do not name the pull
    request's author), and for a push the whole pull request (`needs_pr_lookup`).
    """

    model_config = ConfigDict(frozen=True)

    repository: str
    """owner/name of the repository the change goes into."""
    installation_id: int | None
    """The App installation to authenticate as; None in Actions payloads."""
    pr_number: int | None
    base_ref: str | None
    """The branch merged into; None for a push until its pull request is found."""
    head_ref: str
    """The builder branch; for a merged pull request still the branch that was merged."""
    base_sha: str | None
    head_sha: str
    """The commit to validate; for a merged pull request the merge commit."""
    head_repository: str
    """owner/name of the repository holding the head commit: differs for forks."""
    author: str | None
    author_association: str | None
    clone_url: str
    """The base repository's: pull request heads, forks' too, are fetchable there as
    refs/pull/<n>/head."""
    trigger: str
    """What started it, e.g. "pull_request.synchronize" or "comment:/gatekeeper run"."""
    merged: bool = False
    """A merge into a target branch: the target is re-validated with the merge in it."""
    needs_pr_lookup: bool = False
    """A push: the caller finds the open pull request of head_ref and uses
    `target_from_pull_request` on it."""
    delivery_id: str | None = None
    """X-GitHub-Delivery, to tie logs and results to the webhook delivery."""
    merge_group: bool = False
    """A merge queue's group: head_sha is what lands on base_ref once the group merges (the
    queued pull requests merged in order on base_sha), head_ref the queue's temporary
    `gh-readonly-queue/...` branch; the caller lists the group's pull requests
    (`bot.mergegroup`)."""


class GroupDestroyed(BaseModel):
    """A merge group was merged, dequeued or invalidated (a pull request ahead of it failed or
    left the queue): the run validating `head_sha`, if any, ends now."""

    model_config = ConfigDict(frozen=True)

    repository: str
    installation_id: int | None
    head_ref: str
    head_sha: str
    reason: str
    """GitHub's: merged, invalidated or dequeued."""
    delivery_id: str | None = None


class Ignored(BaseModel):
    """Not work. The reason is for logs and for people asking why nothing ran."""

    model_config = ConfigDict(frozen=True)

    reason: str
    # False for an event Gatekeeper does not understand: where a green result could stand for
    # a validation (an Actions job), it must end in an error instead.
    known: bool = True


class NeedsPullRequest(BaseModel):
    """A `/gatekeeper` command on a pull request: fetch the pull request, then call
    `target_from_pull_request(pr_json, repository, installation_id, trigger, delivery_id)`.

    For "ok-to-test" the caller must first make sure the commenter may grant it (write
    access); `commenter_association` allows the same cheap first check as `trusted`.
    """

    model_config = ConfigDict(frozen=True)

    repository: str
    installation_id: int | None
    pr_number: int
    trigger: str
    commenter: str
    commenter_association: str
    command: Command
    delivery_id: str | None = None


Routed = Target | Ignored | NeedsPullRequest | GroupDestroyed


# --- The parts of payloads that are read. Strict: JSON has exact types, "2" is not a number.


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Action(_Part):
    action: str


class _Repository(_Part):
    full_name: str
    clone_url: str


class _Installation(_Part):
    id: int


class _User(_Part):
    login: str


class _HeadRepository(_Part):
    full_name: str


class _Ref(_Part):
    ref: str
    sha: str
    # GitHub sends null when the fork the pull request came from was deleted.
    repo: _HeadRepository | None


class _PullRequest(_Part):
    number: int
    state: str
    draft: bool = False
    merged: bool = False
    merge_commit_sha: str | None = None
    user: _User
    author_association: str
    head: _Ref
    base: _Ref


class _BaseRef(_Part):
    repo: _Repository


class _FetchedPullRequest(_Part):
    """A pull request fetched by the caller has no `repository` beside it: its base's repo is
    where the clone URL comes from."""

    base: _BaseRef


class _PullRequestEvent(_Part):
    action: str
    pull_request: _PullRequest
    repository: _Repository
    installation: _Installation | None = None


class _Push(_Part):
    ref: str
    after: str
    deleted: bool = False
    repository: _Repository
    installation: _Installation | None = None
    sender: _User


class _SuiteRepository(_Part):
    url: str

    @field_validator("url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not re.search(r"/repos/[^/]+/[^/]+$", value):
            raise ValueError(f"'{value}' is not a repository API URL (.../repos/owner/name)")
        return value

    @property
    def full_name(self) -> str:
        """owner/name: check suites' pull requests name their repositories only by API URL."""
        return self.url.rsplit("/repos/", 1)[1]


class _SuiteRef(_Part):
    ref: str
    sha: str
    repo: _SuiteRepository


class _SuitePullRequest(_Part):
    number: int
    head: _SuiteRef
    base: _SuiteRef


class _CheckSuite(_Part):
    head_sha: str
    pull_requests: list[_SuitePullRequest]


class _CheckSuiteEvent(_Part):
    check_suite: _CheckSuite
    repository: _Repository
    installation: _Installation | None = None


class _CheckRun(_Part):
    check_suite: _CheckSuite


class _CheckRunEvent(_Part):
    check_run: _CheckRun
    repository: _Repository
    installation: _Installation | None = None


class _MergeGroup(_Part):
    head_sha: str
    head_ref: str
    base_sha: str
    base_ref: str


class _MergeGroupEvent(_Part):
    action: str
    merge_group: _MergeGroup
    repository: _Repository
    installation: _Installation | None = None
    sender: _User | None = None
    # Only in `destroyed`: merged, invalidated or dequeued.
    reason: str | None = None


class _RequestedAction(_Part):
    identifier: str


class _RequestedActionEvent(_Part):
    requested_action: _RequestedAction


class _Issue(_Part):
    number: int
    # Present (an object of URLs) only when the issue is a pull request.
    pull_request: dict[str, Any] | None = None


class _Comment(_Part):
    body: str
    user: _User
    author_association: str


class _IssueCommentEvent(_Part):
    issue: _Issue
    comment: _Comment
    repository: _Repository
    installation: _Installation | None = None


_PartT = TypeVar("_PartT", bound=_Part)


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for step in loc:
        if isinstance(step, int):
            path += f"[{step}]"
        else:
            path += f".{step}" if path else step
    return path or "payload"


def _parse(model: type[_PartT], data: object, prefix: str = "") -> _PartT:
    """Validate `data` against `model`, turning pydantic's errors into one PayloadError."""
    if not isinstance(data, dict):
        raise PayloadError(f"{prefix or 'payload'} is not a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = []
        for detail in error.errors(include_url=False):
            where = _path(prefix, detail["loc"])
            if detail["type"] == "missing":
                problems.append(f"{where} missing")
            elif detail["type"] in ("model_type", "dict_type"):
                problems.append(f"{where} is not an object")
            else:
                problems.append(f"{where} invalid: {detail['msg']}")
        raise PayloadError("; ".join(problems)) from None


def _installation_id(installation: _Installation | None) -> int | None:
    return installation.id if installation else None


# --- Routing, one function per event.


def _open_pull_request(
    pr: _PullRequest,
    repository: _Repository,
    installation_id: int | None,
    trigger: str,
    delivery_id: str | None,
) -> Target | Ignored:
    if pr.head.repo is None:
        return Ignored(reason="the pull request's head repository was deleted")
    return Target(
        repository=repository.full_name,
        installation_id=installation_id,
        pr_number=pr.number,
        base_ref=pr.base.ref,
        head_ref=pr.head.ref,
        base_sha=pr.base.sha,
        head_sha=pr.head.sha,
        head_repository=pr.head.repo.full_name,
        author=pr.user.login,
        author_association=pr.author_association,
        clone_url=repository.clone_url,
        trigger=trigger,
        delivery_id=delivery_id,
    )


def _merged_pull_request(event: _PullRequestEvent, trigger: str, delivery_id: str | None) -> Target:
    """The target branch now holds the merge commit: validate it there.

    base_sha stays None: the payload's base.sha is where the base stood when the pull request
    was last updated, not necessarily the target's tip before the merge, which the caller
    resolves (e.g. the merge commit's first parent).
    """
    pr = event.pull_request
    if pr.merge_commit_sha is None:
        raise PayloadError("pull_request.merge_commit_sha missing")
    return Target(
        repository=event.repository.full_name,
        installation_id=_installation_id(event.installation),
        pr_number=pr.number,
        base_ref=pr.base.ref,
        head_ref=pr.head.ref,
        base_sha=None,
        head_sha=pr.merge_commit_sha,
        # The merge commit lives in the target repository, whoever wrote the change.
        head_repository=event.repository.full_name,
        author=pr.user.login,
        author_association=pr.author_association,
        clone_url=event.repository.clone_url,
        trigger=trigger,
        merged=True,
        delivery_id=delivery_id,
    )


def _route_pull_request(event: str, payload: dict[str, Any], delivery_id: str | None) -> Routed:
    action = _parse(_Action, payload).action
    if action != "closed" and action not in _OPEN_ACTIONS:
        return Ignored(reason=f"{event} action '{action}' needs no validation")
    parsed = _parse(_PullRequestEvent, payload)
    pr, trigger = parsed.pull_request, f"{event}.{action}"
    if action == "closed":
        if not pr.merged:
            return Ignored(reason="pull request closed without merging")
        return _merged_pull_request(parsed, trigger, delivery_id)
    # ready_for_review always validates: it is the event that ends the draft.
    if pr.draft and action != "ready_for_review":
        return Ignored(reason="draft pull request")
    return _open_pull_request(
        pr, parsed.repository, _installation_id(parsed.installation), trigger, delivery_id
    )


def _route_push(event: str, payload: dict[str, Any], delivery_id: str | None) -> Routed:
    """A push names no base; the caller finds the branch's open pull request.

    Pushes to a pull request's branch also send pull_request.synchronize; the push route is
    for setups that only subscribe to pushes (e.g. an Actions workflow `on: push`).
    """
    push = _parse(_Push, payload)
    if not push.ref.startswith("refs/heads/"):
        return Ignored(reason=f"'{push.ref}' is not a branch")
    branch = push.ref.removeprefix("refs/heads/")
    if push.deleted or push.after == _ZERO_SHA:
        return Ignored(reason=f"branch '{branch}' was deleted")
    return Target(
        repository=push.repository.full_name,
        installation_id=_installation_id(push.installation),
        pr_number=None,
        base_ref=None,
        head_ref=branch,
        base_sha=None,
        head_sha=push.after,
        head_repository=push.repository.full_name,
        author=push.sender.login,
        author_association=None,
        clone_url=push.repository.clone_url,
        trigger=event,
        needs_pr_lookup=True,
        delivery_id=delivery_id,
    )


def _suite_target(
    suite: _CheckSuite,
    repository: _Repository,
    installation: _Installation | None,
    trigger: str,
    delivery_id: str | None,
) -> Target | Ignored:
    """A check suite lists the pull requests whose head it is; GitHub leaves the list empty for
    forks' branches. With several (one branch into two bases) the first is taken."""
    if not suite.pull_requests:
        return Ignored(reason="no pull request for this check suite")
    pr = suite.pull_requests[0]
    return Target(
        repository=repository.full_name,
        installation_id=_installation_id(installation),
        pr_number=pr.number,
        base_ref=pr.base.ref,
        head_ref=pr.head.ref,
        base_sha=pr.base.sha,
        head_sha=suite.head_sha,
        head_repository=pr.head.repo.full_name,
        author=None,
        author_association=None,
        clone_url=repository.clone_url,
        trigger=trigger,
        delivery_id=delivery_id,
    )


def _route_check_suite(event: str, payload: dict[str, Any], delivery_id: str | None) -> Routed:
    action = _parse(_Action, payload).action
    if action not in ("requested", "rerequested"):
        return Ignored(reason=f"{event} action '{action}' needs no validation")
    parsed = _parse(_CheckSuiteEvent, payload)
    return _suite_target(
        parsed.check_suite,
        parsed.repository,
        parsed.installation,
        f"{event}.{action}",
        delivery_id,
    )


def _route_check_run(event: str, payload: dict[str, Any], delivery_id: str | None) -> Routed:
    """Re-running a Gatekeeper check run (or its "rerun" button) validates its suite again."""
    action = _parse(_Action, payload).action
    if action == "requested_action":
        identifier = _parse(_RequestedActionEvent, payload).requested_action.identifier
        if identifier != "rerun":
            return Ignored(reason=f"requested action '{identifier}' is not 'rerun'")
    elif action != "rerequested":
        return Ignored(reason=f"{event} action '{action}' needs no validation")
    parsed = _parse(_CheckRunEvent, payload)
    return _suite_target(
        parsed.check_run.check_suite,
        parsed.repository,
        parsed.installation,
        f"{event}.{action}",
        delivery_id,
    )


def queue_pull_number(head_ref: str) -> int | None:
    """The pull request a merge queue's branch was made for (the last of its group), or None
    when `head_ref` is not a `gh-readonly-queue/<base>/pr-<n>-<sha>` branch."""
    found = _QUEUE_REF.fullmatch(head_ref.removeprefix("refs/heads/"))
    return int(found["number"]) if found else None


def _route_merge_group(event: str, payload: dict[str, Any], delivery_id: str | None) -> Routed:
    """A merge queue asks for checks on a group (`checks_requested`), or drops one
    (`destroyed`). The group's head, not any pull request's, gets the status: it is the commit
    that lands on the base, so that is what is validated, against the group's base_sha."""
    action = _parse(_Action, payload).action
    if action not in ("checks_requested", "destroyed"):
        return Ignored(reason=f"{event} action '{action}' needs no validation")
    parsed = _parse(_MergeGroupEvent, payload)
    group = parsed.merge_group
    head_ref = group.head_ref.removeprefix("refs/heads/")
    if action == "destroyed":
        return GroupDestroyed(
            repository=parsed.repository.full_name,
            installation_id=_installation_id(parsed.installation),
            head_ref=head_ref,
            head_sha=group.head_sha,
            reason=parsed.reason or "destroyed",
            delivery_id=delivery_id,
        )
    return Target(
        repository=parsed.repository.full_name,
        installation_id=_installation_id(parsed.installation),
        pr_number=None,
        base_ref=group.base_ref.removeprefix("refs/heads/"),
        head_ref=head_ref,
        base_sha=group.base_sha,
        head_sha=group.head_sha,
        # The queue's branch lives in the repository itself, whoever wrote the changes.
        head_repository=parsed.repository.full_name,
        author=parsed.sender.login if parsed.sender else None,
        author_association=None,
        clone_url=parsed.repository.clone_url,
        trigger=f"{event}.{action}",
        merge_group=True,
        delivery_id=delivery_id,
    )


def _command(body: str) -> Command | None:
    """The command on the comment's first line, e.g. "/gatekeeper run"; None if there is none."""
    lines = body.strip().splitlines()
    words = lines[0].split() if lines else []
    if len(words) == 2 and words[0] == "/gatekeeper" and words[1] in get_args(Command):
        return cast(Command, words[1])
    return None


def _route_issue_comment(event: str, payload: dict[str, Any], delivery_id: str | None) -> Routed:
    action = _parse(_Action, payload).action
    if action != "created":
        return Ignored(reason=f"{event} action '{action}' needs no validation")
    parsed = _parse(_IssueCommentEvent, payload)
    if parsed.issue.pull_request is None:
        return Ignored(reason="comment on an issue, not a pull request")
    command = _command(parsed.comment.body)
    if command is None:
        return Ignored(reason="comment is not /gatekeeper run or /gatekeeper ok-to-test")
    return NeedsPullRequest(
        repository=parsed.repository.full_name,
        installation_id=_installation_id(parsed.installation),
        pr_number=parsed.issue.number,
        trigger=f"comment:/gatekeeper {command}",
        commenter=parsed.comment.user.login,
        commenter_association=parsed.comment.author_association,
        command=command,
        delivery_id=delivery_id,
    )


_ROUTES: dict[str, Callable[[str, dict[str, Any], str | None], Routed]] = {
    "pull_request": _route_pull_request,
    # Actions workflows that must see forks' pull requests run on pull_request_target: same
    # payload, the event name differs.
    "pull_request_target": _route_pull_request,
    "push": _route_push,
    "check_suite": _route_check_suite,
    "check_run": _route_check_run,
    "issue_comment": _route_issue_comment,
    "merge_group": _route_merge_group,
}


def route(event: str, payload: object, delivery_id: str | None = None) -> Routed:
    """Map one event (X-GitHub-Event / GITHUB_EVENT_NAME) and its payload to work or a reason.

    Raises PayloadError when a field that is read is missing or has the wrong type.
    """
    if not isinstance(payload, dict):
        raise PayloadError("payload is not a JSON object")
    handler = _ROUTES.get(event)
    if handler is not None:
        return handler(event, payload, delivery_id)
    if event == "ping":
        return Ignored(reason="ping")
    if event in _NOT_WORK_EVENTS:
        return Ignored(reason=f"{event} events need no validation")
    return Ignored(reason=f"unknown event '{event}'", known=False)


def target_from_pull_request(
    pr_json: object,
    repository: str,
    installation_id: int | None,
    trigger: str,
    delivery_id: str | None = None,
) -> Target | Ignored:
    """The Target of a pull request the caller fetched (REST `GET /repos/{repo}/pulls/{n}`,
    the same shape as a webhook's `pull_request`), after `NeedsPullRequest` or a push.

    Closed pull requests are Ignored: there is nothing left to gate. Drafts are not: a
    `/gatekeeper run` on a draft is an explicit request.
    """
    pr = _parse(_PullRequest, pr_json, prefix="pull_request")
    if pr.state != "open":
        return Ignored(reason=f"pull request #{pr.number} is {'merged' if pr.merged else 'closed'}")
    base = _parse(_FetchedPullRequest, pr_json, prefix="pull_request").base
    return _open_pull_request(
        pr,
        _Repository(full_name=repository, clone_url=base.repo.clone_url),
        installation_id,
        trigger,
        delivery_id,
    )


# --- Policy and trust.


def _matches(branch: str, patterns: list[str]) -> bool:
    # fnmatchcase: branch names are case-sensitive; `*` also matches "/" (builder/* matches
    # builder/team/fix), as in the policy's documentation of glob patterns.
    return any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns)


def is_builder(branch: str, branches: Branches) -> bool:
    """Whether `branch` is a builder branch, whose pull requests Gatekeeper validates."""
    return _matches(branch, branches.builder)


def is_target(branch: str, branches: Branches) -> bool:
    """Whether `branch` is a protected target branch that builder branches merge into."""
    return _matches(branch, branches.target)


def check_branches(target: Target, branches: Branches) -> Target | Ignored:
    """Keep the target only if it is a builder branch going into a target branch.

    For merged targets the same holds for the pull request that was merged: only builders'
    merges into targets are re-validated. A push's base is unknown until its pull request is
    found, so only its head is checked here; the caller checks again after the lookup.

    A merge group into a target branch is validated whatever its pull requests' branches: its
    head is exactly what lands on the target, and a queue whose required check never reports
    stalls until GitHub times the group out.
    """
    if not target.merge_group and not is_builder(target.head_ref, branches):
        patterns = ", ".join(branches.builder) or "none configured"
        return Ignored(
            reason=f"head branch '{target.head_ref}' is not a builder branch ({patterns})"
        )
    if target.base_ref is not None and not is_target(target.base_ref, branches):
        patterns = ", ".join(branches.target) or "none configured"
        return Ignored(reason=f"base '{target.base_ref}' is not a target branch ({patterns})")
    return target


def trusted(target: Target) -> bool:
    """The cheap first check, from the payload alone: may this code run without consent?

    True for a branch of the repository itself whose author GitHub reports as OWNER, MEMBER or
    COLLABORATOR, for merged targets (someone with write access merged them: the code is
    the target branch's now) and for merge groups (only people with write access can queue a
    pull request, and the queue's branch is the repository's own). False does not mean
    untrusted: the caller then checks the author's permission through the API, and failing
    that waits for a maintainer's `/gatekeeper ok-to-test`. Forks are never trusted here,
    whoever opened them.
    """
    if target.merged or target.merge_group:
        return True
    same_repository = target.head_repository.lower() == target.repository.lower()
    return same_repository and target.author_association in TRUSTED_ASSOCIATIONS


def to_job(target: Target, base_sha: str) -> Job:
    """The Job for a target. `base_sha` comes from the caller, who resolves the base branch
    (the payload's may be missing or stale by the time the job runs).

    Raises ValueError for a push target whose pull request has not been looked up yet.
    """
    if target.base_ref is None:
        raise ValueError(
            f"target {target.head_ref} has no base branch: look up its pull request first"
        )
    return Job(
        repository=target.repository,
        base_ref=target.base_ref,
        head_ref=target.head_ref,
        base_sha=base_sha,
        head_sha=target.head_sha,
        pr_number=target.pr_number,
        author=target.author,
        trigger=target.trigger,
    )
