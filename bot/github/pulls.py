"""The pull requests behind a commit, through the API: a push's, and a merge group's.

A push and a merge group name no pull request in their payloads. The App and the Actions step
both need them (a push is validated as its open pull request; a merge group's report lists the
pull requests it merges, and a rejected group is bisected over them), so the lookups live
here, on the two REST calls GitHub offers: `GET /repos/{repo}/commits/{sha}/pulls` and
`GET /repos/{repo}/pulls/{n}`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from bot.engine.batch import Chain
from bot.engine.job import BatchMember, Job
from bot.github import events
from bot.gitrepo import first_parents

# What a merge queue writes as the subject of a group's step when no merge commit names the
# pull request's head: "Merge pull request #12 from owner/branch" or a squash's "Title (#12)".
_SUBJECT_NUMBER = re.compile(r"^Merge pull request #(?P<merge>[0-9]+)\b|\(#(?P<squash>[0-9]+)\)$")


class PullRequests(Protocol):
    """The API reads some events need: a `bot.github.client.GitHubClient` (or, in Actions,
    a stand-in that says how to give the step a token)."""

    def pull_request(self, repo: str, number: int) -> dict[str, Any]: ...

    def pulls_for_commit(self, repo: str, sha: str) -> list[dict[str, Any]]: ...


def open_pull_of_push(push: events.Target, lookups: PullRequests) -> events.Target | events.Ignored:
    """The open pull request whose head a push to a branch is, as `target_from_pull_request`
    routes it (under the push's trigger and delivery); Ignored when none is."""
    for simple in lookups.pulls_for_commit(push.repository, push.head_sha):
        head = simple.get("head") or {}
        number = simple.get("number")
        if not isinstance(number, int):
            continue
        if simple.get("state") == "open" and head.get("sha") == push.head_sha:
            pull = lookups.pull_request(push.repository, number)
            return events.target_from_pull_request(
                pull, push.repository, push.installation_id, push.trigger, push.delivery_id
            )
    return events.Ignored(reason=f"no open pull request has {push.head_sha[:7]} as its head")


def group_chain(repo: Path, group: events.Target, lookups: PullRequests, job: Job) -> Chain:
    """The pull requests of a merge group, in the order the queue merged them, as the Chain
    the culprit search bisects: `job` (the group's) with them as its batch, and the queue's
    own commits as the prefixes.

    `repo` holds the group's base_sha and head_sha. Each first-parent step from the base to the
    head is one pull request: a merge commit's second parent is its head (asked of the API), a
    squash's subject ends in "(#n)". The queue's branch names the last one
    (`gh-readonly-queue/<base>/pr-<n>-<sha>`), which is added if no step named it. The steps
    are the prefixes only when each names its own pull request, in order (a rebasing queue
    writes several unnamed steps per pull request: then the Chain has no commits).
    """
    named = [
        (_step_number(group.repository, link.parents[1:], link.subject, lookups), link.sha)
        for link in first_parents(repo, group.base_sha or "", group.head_sha)
    ]
    numbers = list(dict.fromkeys(number for number, _ in named if number is not None))
    last = events.queue_pull_number(group.head_ref)
    if last is not None and last not in numbers:
        numbers.append(last)
        if named and named[-1][0] is None:
            named[-1] = (last, named[-1][1])
    members = []
    for number in numbers:
        pull = lookups.pull_request(group.repository, number)
        head = pull.get("head") or {}
        members.append(
            BatchMember(
                ref=str(head.get("ref") or f"#{number}"),
                sha=str(head.get("sha") or ""),
                pr_number=number,
                title=pull.get("title"),
            )
        )
    commits = [sha for _, sha in named] if [n for n, _ in named] == numbers else []
    return Chain(job.model_copy(update={"batch": members}), members, commits, repo)


def _step_number(
    repository: str, merged: list[str], subject: str, lookups: PullRequests
) -> int | None:
    for sha in merged:
        for simple in lookups.pulls_for_commit(repository, sha):
            if (simple.get("head") or {}).get("sha") == sha and isinstance(
                simple.get("number"), int
            ):
                return int(simple["number"])
    found = _SUBJECT_NUMBER.search(subject.strip())
    if found:
        return int(found["merge"] or found["squash"])
    return None
