"""The event file and what it asks to validate: from `GITHUB_EVENT_PATH` to a Target and its
base commit, in this one module.

The payload is the one a webhook delivery carries, so it is mapped to work through
`bot.github.events` exactly as the webhook service does (`route`). Only what Actions adds is
handled here:

- `workflow_dispatch` (a person, or the service's dispatch mode) names the work in `inputs`
  (base_sha, head_sha, pr_number, run_id, merged...: `bot.actions.dispatch`), not in a
  webhook shape;
- `push` names no pull request: it is looked up through the API (with `GITHUB_TOKEN`);
- the commits are resolved in the step's checkout, which must hold both the base and the head.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bot.actions.dispatch import DispatchInputs
from bot.actions.errors import ActionsError
from bot.github import events, pulls
from bot.github.payload import PayloadRefused
from bot.github.payload import parse as parse_payload
from bot.gitrepo import GitError, resolve

MAX_EVENT_BYTES = 25 * 1024 * 1024  # GitHub caps webhook payloads, and so event files


# -- lookups that need the API --------------------------------------------------------------


# The API reads some events need (a push names no pull request, a dispatch a number, a merge
# group several): a `bot.github.client.GitHubClient`, or `_NoApi` (bot.actions.run) when the
# step has no token.
PullRequests = pulls.PullRequests


# -- event -> Target ------------------------------------------------------------------------


def read_event(path: Path) -> dict[str, Any]:
    """The event file as GitHub writes it: a regular file of at most GitHub's 25 MB payload
    limit (checked before reading: /dev/zero never ends, a FIFO blocks), parsed as the
    webhook parses a body."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ActionsError(f"event file {path} is not a regular file (GITHUB_EVENT_PATH)")
        with open(path, "rb") as handle:
            body = handle.read(MAX_EVENT_BYTES + 1)
    except FileNotFoundError:
        raise ActionsError(f"event file {path} does not exist (GITHUB_EVENT_PATH)") from None
    except OSError as exc:
        raise ActionsError(f"event file {path} cannot be read: {exc}") from None
    if len(body) > MAX_EVENT_BYTES:
        raise ActionsError(f"event file {path} is larger than GitHub's 25 MB payloads")
    try:
        return parse_payload(body)
    except PayloadRefused as exc:
        raise ActionsError(f"event file {path}: {exc}") from None


def _repository(payload: Mapping[str, Any]) -> tuple[str, str]:
    repo = payload.get("repository")
    if not isinstance(repo, dict) or not isinstance(repo.get("full_name"), str):
        raise events.PayloadError("repository.full_name missing")
    return repo["full_name"], str(repo.get("clone_url") or "")


def resolve_target(
    event_name: str,
    payload: dict[str, Any],
    lookups: PullRequests,
    resolve_ref: Callable[[str], str],
) -> events.Target | events.Ignored:
    """The Target of an Actions event, through `bot.github.events` wherever the payload is GitHub's.

    `resolve_ref` turns a branch into a commit of the checkout (dispatch inputs may name one).
    Raises PayloadError for a malformed payload, ActionsError for unusable inputs.
    """
    if event_name == "workflow_dispatch":
        return _dispatch_target(payload, DispatchInputs.from_payload(payload), lookups, resolve_ref)
    routed = events.route(event_name, payload)
    if isinstance(routed, events.NeedsPullRequest):
        if routed.commenter_association not in events.TRUSTED_ASSOCIATIONS:
            return events.Ignored(
                reason=f"{routed.commenter} ({routed.commenter_association}) may not run "
                "gatekeeper commands"
            )
        pull = lookups.pull_request(routed.repository, routed.pr_number)
        return events.target_from_pull_request(
            pull, routed.repository, routed.installation_id, routed.trigger
        )
    if isinstance(routed, events.Target) and routed.needs_pr_lookup:
        return _push_target(routed, payload, lookups)
    if isinstance(routed, events.GroupDestroyed):
        # GitHub runs no workflow for it; a run still in progress is cancelled by the
        # workflow's concurrency group, and the group will not merge.
        return events.Ignored(reason=f"merge group {routed.head_ref} was {routed.reason}")
    return routed


def _push_target(
    push: events.Target, payload: dict[str, Any], lookups: PullRequests
) -> events.Target | events.Ignored:
    """A push is work when it is the head of an open pull request (a builder's push) or the
    merge commit of a merged one (the target branch, re-validated with the merge in it)."""
    for simple in lookups.pulls_for_commit(push.repository, push.head_sha):
        number = simple.get("number")
        if not isinstance(number, int):
            continue
        if simple.get("merge_commit_sha") == push.head_sha and simple.get("merged_at"):
            pull = lookups.pull_request(push.repository, number)
            return _merged_target(pull, payload, push.trigger)
        head = simple.get("head") or {}
        if simple.get("state") == "open" and head.get("sha") == push.head_sha:
            pull = lookups.pull_request(push.repository, number)
            return events.target_from_pull_request(pull, push.repository, None, push.trigger)
    return events.Ignored(
        reason=f"no pull request has {push.head_sha[:7]} as its head or its merge commit"
    )


def _dispatch_target(
    payload: dict[str, Any],
    inputs: DispatchInputs,
    lookups: PullRequests,
    resolve_ref: Callable[[str], str],
) -> events.Target | events.Ignored:
    """The service's dispatch mode sends every field (base_ref, base_sha, head_ref, head_sha,
    pr_number, run_id): the Target is taken as sent, with no API call, and the status goes on
    exactly that head SHA. A person may give only a branch, or only a pull request number
    (then the pull request is read through the API and routed like a webhook's)."""
    repository, clone_url = _repository(payload)
    trigger = "workflow_dispatch" + (f" (gatekeeper run {inputs.run_id})" if inputs.run_id else "")
    if inputs.head_ref is None and inputs.head_sha is None:
        if inputs.pr_number is None:
            raise ActionsError(
                "workflow_dispatch needs the input head_ref (a branch), head_sha or pr_number"
            )
        pull = lookups.pull_request(repository, inputs.pr_number)
        if inputs.merged:
            return _merged_target(pull, payload, trigger)
        return events.target_from_pull_request(pull, repository, None, trigger)
    head_ref = inputs.head_ref or inputs.head_sha or ""
    sender = payload.get("sender")
    return events.Target(
        repository=repository,
        installation_id=None,
        pr_number=inputs.pr_number,
        base_ref=inputs.base_ref or _default_branch(payload),
        head_ref=head_ref,
        base_sha=inputs.base_sha,
        head_sha=inputs.head_sha or resolve_ref(head_ref),
        head_repository=repository,
        author=sender.get("login") if isinstance(sender, dict) else None,
        author_association=None,
        clone_url=clone_url,
        trigger=trigger,
        merged=inputs.merged,
    )


def _merged_target(
    pull: dict[str, Any], payload: Mapping[str, Any], trigger: str
) -> events.Target | events.Ignored:
    """A merged pull request, routed as the very payload the webhook sends for the merge (the
    one mapping decides), under this event's trigger."""
    closed = {"action": "closed", "pull_request": pull, "repository": payload["repository"]}
    routed = events.route("pull_request", closed)
    if isinstance(routed, events.NeedsPullRequest):  # never for pull_request events
        raise ActionsError(f"pull request #{pull.get('number')} could not be routed")
    if isinstance(routed, events.Target):
        return routed.model_copy(update={"trigger": trigger})
    return routed


def _default_branch(payload: Mapping[str, Any]) -> str:
    repo = payload.get("repository") or {}
    branch = repo.get("default_branch") if isinstance(repo, dict) else None
    return branch if isinstance(branch, str) and branch else "main"


def resolve_in_checkout(repo: Path, ref: str) -> str:
    """A branch or commit of the checkout; branches are remote-tracking ones after
    actions/checkout, local ones in a plain clone."""
    for candidate in (f"origin/{ref}", ref):
        try:
            return resolve(repo, candidate)
        except GitError:
            continue
    raise GitError(f"unknown ref '{ref}' in {repo}: {_FETCH_HINT}")


_FETCH_HINT = (
    "check out with `fetch-depth: 0` (actions/checkout) so that both the base and the head "
    "commit are in the repository"
)


def base_commit(repo: Path, target: events.Target) -> str:
    """The base commit, as the webhook service resolves it: the payload's base SHA, else the
    base branch's tip. A merged target is judged against the target before the merge: the
    merge commit's first parent."""
    if target.base_sha:
        ref = target.base_sha
    elif target.merged:
        ref = f"{target.head_sha}^1"
    else:
        return resolve_in_checkout(repo, target.base_ref or "")
    try:
        return resolve(repo, ref)
    except GitError as exc:
        raise GitError(f"{exc}; {_FETCH_HINT}") from None
