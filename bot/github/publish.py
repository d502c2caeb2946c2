"""How a run shows on the pull request: commit status, check run, sticky comment, review, labels.

What each outcome looks like (branch protection can require the status, the check, or both):

| outcome    | commit status                  | check run conclusion | review (when enabled)   |
|------------|--------------------------------|----------------------|-------------------------|
| approve    | success                        | success              | APPROVE                 |
| review     | failure, "review needed · …"   | action_required      | REQUEST_CHANGES         |
| reject     | failure                        | failure              | REQUEST_CHANGES         |
| error      | error                          | failure              | own approvals dismissed |
| superseded | error, "superseded by abc1234" | cancelled            | —                       |
| cancelled  | error, "cancelled · dequeued"  | cancelled            | —                       |

`neutral` and `skipped` are never used: branch protection counts them as passing, which would
turn an undecided run into an approval. `action_required` fails a required check like `failure`
does, but reads as "a person has to act", which is what `review` means. A superseded run ends
in `error` rather than `success` so that it can never look like an approval, and never stays
pending; so does a merge group's run GitHub cancelled by destroying the group. A `review`
decision requests changes rather than commenting, because a comment would
leave an earlier approval by the bot standing; the maintainer who reviews dismisses it.

A rejected merge group reports on its head like any run, and its culprit (the pull request the
verdict names, bot.engine.batch) gets a comment of its own saying which group it broke and why:
GitHub dequeues it without a word.

Failure policy: the commit status and the check run are the gate, written first, and a failure
to write them raises (the caller then ends the run in `error`). The comments, the review, the
labels and the annotations beyond the first 50 report on the gate: each is attempted, and a
failure is logged and returned in `Published.problems`, because turning a sound verdict into
`error` over a label would be wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.engine.batch import named_culprit
from bot.engine.job import BatchMember
from bot.github.client import GitHubClient
from bot.github.http import GitHubError
from bot.github.limits import (
    CHECK_TEXT_LIMIT,
    COMMENT_LIMIT,
    REPORT_MARKER,
    annotations,
    batches,
    check_run_output,
    fit_line,
    status_description,
    status_state,
    sticky_comment,
    truncate_markdown,
    truncation_note,
)
from bot.judging.verdict import Decision, Risk, Verdict

log = logging.getLogger("gatekeeper.github")

CONCLUSIONS = {
    Decision.approve: "success",
    Decision.review: "action_required",
    Decision.reject: "failure",
    Decision.error: "failure",
}
REVIEW_EVENTS = {
    Decision.approve: "APPROVE",
    Decision.review: "REQUEST_CHANGES",
    Decision.reject: "REQUEST_CHANGES",
}
_REVIEW_STATES = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}
REVIEW_MARKER = "<!-- gatekeeper:review -->"
VALIDATING = {
    "title": "Validating",
    "summary": "Merging the change, migrating a scratch database, running the checks.",
}
# Only these labels are the bot's: a team's own `risk:accepted` is never touched.
RISK_LABELS = {
    Risk.low: ("risk:low", "0e8a16", "Gatekeeper rated the change's risk low"),
    Risk.medium: ("risk:medium", "fbca04", "Gatekeeper rated the change's risk medium"),
    Risk.high: ("risk:high", "d93f0b", "Gatekeeper rated the change's risk high"),
    Risk.critical: ("risk:critical", "b60205", "Gatekeeper rated the change's risk critical"),
}


@dataclass
class Published:
    """What `finish` and `error` wrote, and what they could not (already logged)."""

    check_run_id: int | None
    comment_id: int | None = None
    problems: list[str] = field(default_factory=list)


class Publisher:
    """Reports the runs of one repository; every write goes through the client's retries and
    write budget.

    A check run started here is remembered by head SHA, so `finish`, `error` and `superseded`
    complete it even when the caller does not pass its id back.
    """

    def __init__(
        self,
        client: GitHubClient,
        repo: str,
        *,
        context: str = "gatekeeper",
        report_url: str | None = None,
        review: bool = False,
        labels: bool = False,
    ) -> None:
        self.client = client
        self.repo = repo
        self.context = context
        self.report_url = report_url
        self.review = review
        self.labels = labels
        self._started: dict[str, int] = {}

    # -- the run's life ------------------------------------------------------------------------

    def pending(self, sha: str, description: str, target_url: str | None = None) -> None:
        """Tell the pull request the work is accepted (and the merge blocked meanwhile);
        `target_url` links elsewhere than the report, e.g. to the Actions run doing the work."""
        self._status(sha, "pending", description, target_url)

    def start_check(self, sha: str, name: str | None = None) -> int:
        body: dict[str, Any] = {
            "name": name or self.context,
            "head_sha": sha,
            "status": "in_progress",
            "started_at": _now(),
            "output": VALIDATING,
        }
        if self.report_url:
            body["details_url"] = self.report_url
        check_run_id = int(self.client.create_check_run(self.repo, body)["id"])
        self._started[sha] = check_run_id
        return check_run_id

    def resume_check(self, check_run_id: int) -> None:
        """A run that waited (for a resource, for a retry) carries on the check run it
        started, rather than leaving it behind unfinished."""
        self._update(check_run_id, {"status": "in_progress", "output": VALIDATING})

    def queued(self, check_run_id: int, title: str, resource: str, place: int) -> None:
        """The run waits in line for a shared resource; the check run shows its place."""
        ahead = "nobody is" if place == 1 else f"{place - 1} run(s) are"
        summary = (
            f"The policy asks for the shared resource `{resource}`, which validations use one "
            f"at a time, in the order they arrived: {ahead} ahead of this one."
        )
        self._update(
            check_run_id, {"status": "queued", "output": {"title": title, "summary": summary}}
        )

    def finish(
        self,
        sha: str,
        verdict: Verdict,
        report_md: str,
        check_run_id: int | None = None,
        pr_number: int | None = None,
    ) -> Published:
        """The verdict on the pull request: final status, completed check run (annotations in
        batches of 50), then the sticky comment and, if enabled, the review and risk labels.
        A batch's verdict that names a pull request as its culprit is commented there too."""
        self._status(sha, status_state(verdict.decision), status_description(verdict))
        output = check_run_output(verdict, report_md, self.report_url)
        notes = batches(annotations(verdict))
        first = {**output, "annotations": notes[0]} if notes else output
        run_id = self._complete(sha, check_run_id, CONCLUSIONS[verdict.decision], first)
        published = Published(run_id)
        for batch in notes[1:]:
            # Annotations append; GitHub requires the title and summary with every output.
            body = {"output": {**output, "annotations": batch}}
            self._try(published, "annotations", lambda b=body: self._update(run_id, b))
        culprit = named_culprit(verdict)
        if culprit is not None:
            self._try(published, "culprit comment", lambda: self._blame(verdict, *culprit))
        if pr_number is None:
            return published
        published.comment_id = self._try(
            published, "comment", lambda: self._comment(pr_number, report_md)
        )
        if self.review:
            self._try(published, "review", lambda: self._review(pr_number, sha, verdict))
        if self.labels:
            self._try(published, "labels", lambda: self._labels(pr_number, verdict.risk))
        return published

    def error(
        self,
        sha: str,
        reason: str,
        check_run_id: int | None = None,
        pr_number: int | None = None,
    ) -> Published:
        """End a run that could not decide. Both the status and the check run are attempted
        even if one fails (then the first failure is raised): either may be the required one.
        """
        description = fit_line(f"error · {reason}")
        summary = (
            "### ⚠️ Gatekeeper could not decide\n\n"
            f"{reason}\n\n"
            "This is not a judgement of the change. Fix the cause, then push again "
            "or comment `/gatekeeper run`.\n"
        )
        output = {
            "title": description,
            "summary": truncate_markdown(summary, CHECK_TEXT_LIMIT, "\n…\n"),
        }
        failures: list[GitHubError] = []
        try:
            self._status(sha, "error", description)
        except GitHubError as exc:
            failures.append(exc)
        run_id = None
        try:
            run_id = self._complete(sha, check_run_id, "failure", output)
        except GitHubError as exc:
            failures.append(exc)
        published = Published(run_id)
        if pr_number is not None and self.review:
            self._try(published, "review", lambda: self._dismiss_approvals(pr_number, reason))
        if pr_number is not None and self.labels:
            self._try(published, "labels", lambda: self._labels(pr_number, None))
        if failures:
            raise failures[0]
        return published

    def superseded(self, sha: str, by_sha: str, check_run_id: int | None = None) -> None:
        """A newer commit is being validated: end this one in a final state that is not an
        approval (`error`, so nobody merges on it) and cancel its check run. A newer run of
        the same commit posts that commit's status itself: only the check run ends here."""
        short = by_sha[:7]
        if by_sha == sha:
            output = {
                "title": "Replaced by a newer run",
                "summary": "This commit is validated again; this run's result is stale.",
            }
        else:
            self._status(sha, "error", f"superseded by {short}")
            output = {
                "title": f"Superseded by {short}",
                "summary": f"A newer commit ({short}) is validated instead; this result is stale.",
            }
        if check_run_id is not None or sha in self._started:
            self._complete(sha, check_run_id, "cancelled", output)

    def cancelled(self, sha: str, reason: str, check_run_id: int | None = None) -> None:
        """A merge group GitHub destroyed (dequeued, invalidated) before its run ended: a
        final status that is no approval (`error`) and a cancelled check run, never pending."""
        self._status(sha, "error", f"cancelled · {reason}")
        output = {"title": fit_line(f"Cancelled: {reason}"), "summary": reason}
        self._complete(sha, check_run_id, "cancelled", output)

    def end_check(self, sha: str, check_run_id: int, conclusion: str, reason: str) -> None:
        """Complete a check run whose run's final status went out without it (it was being
        created when the run ended), with that end's `conclusion` (never a passing one)."""
        output = {"title": fit_line(reason), "summary": reason}
        self._complete(sha, check_run_id, conclusion, output)

    # -- gate writes ---------------------------------------------------------------------------

    def _status(
        self, sha: str, state: str, description: str, target_url: str | None = None
    ) -> None:
        self.client.create_status(
            self.repo,
            sha,
            state,
            fit_line(description),
            self.context,
            target_url or self.report_url,
        )

    def _complete(
        self, sha: str, check_run_id: int | None, conclusion: str, output: dict[str, Any]
    ) -> int:
        """Complete the run's check run, or create it completed when none was started."""
        body: dict[str, Any] = {
            "status": "completed",
            "conclusion": conclusion,
            "completed_at": _now(),
            "output": output,
        }
        if self.report_url:
            body["details_url"] = self.report_url
        run_id = check_run_id if check_run_id is not None else self._started.get(sha)
        if run_id is None:
            created = self.client.create_check_run(
                self.repo, {"name": self.context, "head_sha": sha, **body}
            )
            return int(created["id"])
        self._update(run_id, body)
        return run_id

    def _update(self, check_run_id: int, body: dict[str, Any]) -> None:
        self.client.update_check_run(self.repo, check_run_id, body)

    # -- reports on the gate -------------------------------------------------------------------

    def _try(self, published: Published, what: str, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except GitHubError as exc:
            log.warning("could not publish the %s on %s: %s", what, self.repo, exc)
            published.problems.append(f"{what}: {exc}")
            return None

    def _comment(self, pr_number: int, report_md: str) -> int:
        """The bot's sticky report comment, edited in place on every run."""
        body = sticky_comment(report_md, REPORT_MARKER, self.report_url)
        return self._sticky(pr_number, REPORT_MARKER, body)

    def _blame(self, verdict: Verdict, pr_number: int, reason: str) -> int:
        """Tell the pull request that broke a merge group, which GitHub dequeues without
        saying why: a comment of its own per group (keyed by the group's head, so posting the
        group's end again edits it), never its sticky report, which holds its own verdict."""
        job = verdict.job
        head = str(job.get("head_sha") or "")
        marker = f"<!-- gatekeeper:merge-group {head} -->"
        members = ", ".join(BatchMember.model_validate(m).label for m in job.get("batch") or [])
        where = (
            f"[the group's report]({self.report_url})"
            if self.report_url
            else f"the `{self.context}` check run of `{head[:7]}`"
        )
        text = (
            f"{marker}\n**Gatekeeper: this pull request breaks merge group `{head[:7]}` into "
            f"`{job.get('base_ref')}`**\n\n{reason}\n\n"
            f"The group, merged in this order: {members}. Details: {where}.\n"
        )
        body = truncate_markdown(text, COMMENT_LIMIT, truncation_note(self.report_url))
        return self._sticky(pr_number, marker, body)

    def _sticky(self, pr_number: int, marker: str, body: str) -> int:
        """Edit the bot's comment that starts with `marker` in place, or create it."""
        for comment in self.client.issue_comments(self.repo, pr_number):
            if (comment.get("body") or "").startswith(marker):
                if comment["body"] != body:
                    self.client.update_comment(self.repo, int(comment["id"]), body)
                return int(comment["id"])
        return int(self.client.create_comment(self.repo, pr_number, body)["id"])

    def _review(self, pr_number: int, sha: str, verdict: Verdict) -> None:
        event = REVIEW_EVENTS.get(verdict.decision)
        if event is None:  # error: no judgement to post, but no approval may survive it
            self._dismiss_approvals(pr_number, verdict.summary)
            return
        latest = None
        for review in self._own_reviews(pr_number):
            if review.get("state") in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
                latest = review
        if latest and latest["state"] == _REVIEW_STATES[event] and latest.get("commit_id") == sha:
            return  # already said, on this very commit
        where = f"[the report]({self.report_url})" if self.report_url else "the Gatekeeper comment"
        asks = (
            "\n\nA maintainer must review this change before it merges; dismiss this review "
            "once done."
            if verdict.decision is Decision.review
            else ""
        )
        text = (
            f"{REVIEW_MARKER}\n**Gatekeeper: {status_description(verdict)}**\n\n"
            f"{' '.join(verdict.summary.split())}{asks}\n\nDetails: {where}.\n"
        )
        body = truncate_markdown(text, COMMENT_LIMIT, truncation_note(self.report_url))
        self.client.create_review(self.repo, pr_number, event, body, sha)

    def _dismiss_approvals(self, pr_number: int, reason: str) -> None:
        for review in self._own_reviews(pr_number):
            if review.get("state") == "APPROVED":
                message = fit_line(f"Gatekeeper could not decide on the latest run: {reason}", 1000)
                self.client.dismiss_review(self.repo, pr_number, int(review["id"]), message)

    def _own_reviews(self, pr_number: int) -> list[dict[str, Any]]:
        return [
            review
            for review in self.client.reviews(self.repo, pr_number)
            if (review.get("body") or "").startswith(REVIEW_MARKER)
        ]

    def _labels(self, pr_number: int, risk: Risk | None) -> None:
        """Leave exactly one of the bot's risk labels on the pull request (none without a
        rating), creating the label in the repository the first time."""
        ours = {name.lower() for name, _, _ in RISK_LABELS.values()}
        wanted = RISK_LABELS[risk] if risk is not None else None
        pull = self.client.pull_request(self.repo, pr_number)
        current = [label["name"] for label in pull.get("labels") or []]
        for name in current:
            if name.lower() in ours and (wanted is None or name.lower() != wanted[0]):
                self.client.remove_label(self.repo, pr_number, name)
        if wanted is not None and wanted[0] not in {name.lower() for name in current}:
            self.client.create_label(self.repo, *wanted)
            self.client.add_labels(self.repo, pr_number, [wanted[0]])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
