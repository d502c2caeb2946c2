"""The GitHub App's work: from an accepted delivery to a final status on the pull request.

The webhook only verifies, records and queues (it must answer GitHub within 10 s, and fast);
everything slow happens here, on worker threads. Three rules shape the code:
- every run that posted `pending` ends with a final status, whatever happens (errors,
  supersedes, crashes: the start-up sweep finishes what a dead process left);
- the policy and the checks come from the base branch, never from the change;
- only the newest head SHA of a pull request gets a verdict; older ones are told they were
  superseded.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot import events, history, metrics
from bot.github.client import GitHubClient
from bot.github.publish import Publisher
from bot.gitrepo import GitError, resolve
from bot.pipeline import validate
from bot.policy import LoadedPolicy, load_policy, load_policy_text
from bot.policy.loader import REPO_POLICY_PATH, default_policy_path, policy_at
from bot.report import render_markdown
from bot.sandbox.select import factory
from bot.settings import Settings
from bot.store import Store
from bot.verdict import Verdict
from bot.yamlfile import ConfigError

log = logging.getLogger("gatekeeper.service")

WRITE_PERMISSIONS = {"admin", "maintain", "write"}


class Service:
    def __init__(self, settings: Settings, store: Store, github: GitHubClient):
        self.settings = settings
        self.store = store
        self.github = github
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="gatekeeper-run")
        self._closing = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Finish what a dead process left pending, then resume queued runs."""
        self.store.migrate()
        history.purge(self.store, timedelta(days=self.settings.retention_days))
        for run in self.store.orphaned():
            self._fail(
                run,
                "gatekeeper restarted while this run was in progress; "
                "comment `/gatekeeper run` to validate again",
            )
        for run_id in self.store.queued():
            self.submit(run_id)

    def close(self) -> None:
        self._closing.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, run_id: int) -> None:
        self.pool.submit(self._process_safely, run_id)

    # -- one run -----------------------------------------------------------------------------

    def _process_safely(self, run_id: int) -> None:
        run = self.store.claim(run_id)
        if run is None:
            return
        try:
            self._process(run)
        except Exception as exc:  # never leave a status pending, whatever broke
            log.exception("run %s failed", run_id)
            self._fail(run, f"internal error: {type(exc).__name__}: {exc}")

    def _process(self, run: dict[str, Any]) -> None:
        target = self._target(run)
        if target is None:
            return
        repo = target.repository
        publisher = self._publisher(target, run["id"])
        base = target.base_sha or target.base_ref or ""
        policy_text = self.github.for_installation(target.installation_id).read_file(
            repo, base, REPO_POLICY_PATH
        )
        try:
            loaded = self._policy(policy_text, repo, base)
        except ConfigError as exc:
            publisher.error(target.head_sha, f"the base branch's policy is invalid: {exc}")
            self.store.update(run["id"], state="error", detail=str(exc), finished_at=_now())
            return
        checked = events.check_branches(target, loaded.policy.branches)
        if isinstance(checked, events.Ignored):
            self._finish_quietly(run, checked.reason)
            return
        publisher = self._publisher(target, run["id"], loaded)
        if not self._allowed(target, run):
            publisher.pending(
                target.head_sha,
                "waiting: a maintainer must comment /gatekeeper ok-to-test",
            )
            self.store.update(run["id"], state="waiting", detail="needs ok-to-test")
            return
        if loaded.policy.runner == "actions":
            self._dispatch(run, target, loaded, publisher)
            return
        publisher.pending(target.head_sha, "validating: merge, migrate, checks")
        check_run_id = publisher.start_check(target.head_sha)
        self.store.update(run["id"], check_run_id=check_run_id)
        verdict = self._validate(target)
        report = render_markdown(verdict)
        superseded_by = self.store.superseding(run["id"])
        if superseded_by:
            publisher.superseded(target.head_sha, superseded_by)
            self.store.update(
                run["id"],
                state="superseded",
                verdict=verdict.model_dump(mode="json"),
                report=report,
                finished_at=_now(),
            )
            return
        publisher.finish(
            target.head_sha,
            verdict,
            report,
            check_run_id=check_run_id,
            pr_number=target.pr_number,
        )
        self.store.update(
            run["id"],
            state="done",
            decision=verdict.decision.value,
            risk=verdict.risk.value if verdict.risk else None,
            verdict=verdict.model_dump(mode="json"),
            report=report,
            finished_at=_now(),
        )
        metrics.verdict(verdict)

    def _target(self, run: dict[str, Any]) -> events.Target | None:
        """The run's Target, completed from the pull request where the event left gaps: a
        `/gatekeeper` comment has no head SHA, check events name no author."""
        data = run["target"]
        if data.get("kind") != "needs-pull-request":
            target = events.Target.model_validate(data)
            if target.author is None and target.pr_number is not None:
                pull = self.github.for_installation(target.installation_id).pull_request(
                    target.repository, target.pr_number
                )
                user = pull.get("user") or {}
                target = target.model_copy(
                    update={
                        "author": user.get("login"),
                        "author_association": pull.get("author_association"),
                    }
                )
            return target
        ask = events.NeedsPullRequest.model_validate(data["request"])
        permission = self.github.for_installation(ask.installation_id).permission(
            ask.repository, ask.commenter
        )
        if permission not in WRITE_PERMISSIONS:
            self._finish_quietly(
                run, f"{ask.commenter} has {permission} access; commands need write"
            )
            return None
        pull = self.github.for_installation(ask.installation_id).pull_request(
            ask.repository, ask.pr_number
        )
        routed = events.target_from_pull_request(
            pull, ask.repository, ask.installation_id, ask.trigger, ask.delivery_id
        )
        if isinstance(routed, events.Ignored):
            self._finish_quietly(run, routed.reason)
            return None
        self.store.resolve(run["id"], routed.model_dump(mode="json"), approved=True)
        return routed

    def _finish_quietly(self, run: dict[str, Any], reason: str) -> None:
        """Nothing was posted for this run: it ends in the store only."""
        self.store.update(run["id"], state="ignored", detail=reason, finished_at=_now())

    def _allowed(self, target: events.Target, run: dict[str, Any]) -> bool:
        """Forks and authors without write access wait for a maintainer's ok-to-test."""
        # A `/gatekeeper` command was checked for write access when it was resolved.
        commanded = run["target"].get("kind") == "needs-pull-request"
        if events.trusted(target) or commanded or run["target"].get("approved"):
            return True
        if target.head_repository != target.repository:
            return False
        if target.author is None:
            return False
        permission = self.github.for_installation(target.installation_id).permission(
            target.repository, target.author
        )
        return permission in WRITE_PERMISSIONS

    def _policy(self, text: str | None, repo: str, base: str) -> LoadedPolicy:
        if text is None:
            path = self.settings.default_policy or default_policy_path()
            return load_policy(path)
        # Parsed early for the branch check; suites are read from the clone later.
        return load_policy_text(text, f"{repo}@{base[:12]}:{REPO_POLICY_PATH}", Path("."))

    def _validate(self, target: events.Target) -> Verdict:
        with tempfile.TemporaryDirectory(prefix="gatekeeper-clone-") as tmp:
            clone = Path(tmp) / "repo"
            self._clone(target, clone)
            try:
                # After a merge the base branch already holds the change: compare the merge
                # commit with its first parent, the target as it was before.
                base = f"{target.head_sha}^1" if target.merged else None
                base_sha = resolve(clone, base or target.base_sha or f"origin/{target.base_ref}")
                resolve(clone, target.head_sha)
            except GitError as exc:
                raise RuntimeError(f"cannot validate: {exc}") from None
            job = events.to_job(target, base_sha)
            with policy_at(clone, base_sha, self.settings.default_policy) as loaded:
                job = job.model_copy(update={"policy_source": loaded.source})
                return validate(job, clone, loaded, factory())

    def _clone(self, target: events.Target, dest: Path) -> None:
        token = self.github.token_for(target.installation_id)
        url = self.settings.clone_url.format(token=token, repository=target.repository)
        head_ref = (
            f"+refs/pull/{target.pr_number}/head:refs/gatekeeper/head"
            if target.pr_number is not None
            else target.head_sha
        )
        for args in (
            ["clone", "--quiet", "--no-checkout", url, str(dest)],
            ["-C", str(dest), "fetch", "--quiet", "origin", head_ref],
        ):
            proc = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                # The URL carries the token: never let it into a message.
                message = proc.stderr.replace(token, "***").strip()
                raise RuntimeError(
                    f"git {args[0] if args[0] != '-C' else args[2]} failed: {message}"
                )

    def _publisher(
        self, target: events.Target, run_id: int, loaded: LoadedPolicy | None = None
    ) -> Publisher:
        report = loaded.policy.report if loaded is not None else None
        return Publisher(
            self.github.for_installation(target.installation_id),
            target.repository,
            context=self.settings.status_context,
            report_url=self._report_url(run_id),
            review=bool(report and report.review),
            labels=bool(report and report.labels),
        )

    def _report_url(self, run_id: int) -> str | None:
        if not self.settings.public_url:
            return None
        return f"{self.settings.public_url.rstrip('/')}/runs/{run_id}/report"

    def _fail(self, run: dict[str, Any], reason: str) -> None:
        """End a run in `error` on GitHub and in the store; a failure to post is logged."""
        self.store.update(run["id"], state="error", detail=reason, finished_at=_now())
        data = run["target"]
        if data.get("kind") == "needs-pull-request" or not run.get("head_sha"):
            return
        try:
            target = events.Target.model_validate(data)
            self._publisher(target, run["id"]).error(
                target.head_sha,
                reason,
                check_run_id=run.get("check_run_id"),
                pr_number=target.pr_number,
            )
        except Exception:
            log.exception("could not post the error status of run %s", run["id"])

    # -- dispatch mode: GitHub Actions does the work ----------------------------------------

    def _dispatch(
        self, run: dict[str, Any], target: events.Target, loaded: LoadedPolicy, publisher: Publisher
    ) -> None:
        """Start the repository's gatekeeper workflow for this head; it reports back itself
        (status and check run with its GITHUB_TOKEN). `watch_dispatched` makes sure it does."""
        runner = loaded.policy.actions
        inputs = {
            "base_ref": target.base_ref or "",
            "base_sha": target.base_sha or "",
            "head_ref": target.head_ref,
            "head_sha": target.head_sha,
            "pr_number": "" if target.pr_number is None else str(target.pr_number),
            "run_id": str(run["id"]),
        }
        client = self.github.for_installation(target.installation_id)
        details = client.dispatch_workflow(
            target.repository, runner.workflow, runner.ref or target.base_ref or "", inputs
        )
        link = details.get("html_url")
        publisher.pending(target.head_sha, "dispatched to GitHub Actions", target_url=link)
        self.store.update(
            run["id"],
            state="dispatched",
            workflow_run_id=details.get("workflow_run_id"),
            deadline=_now() + timedelta(seconds=runner.timeout),
            detail=link or "",
        )

    def watch_dispatched(self) -> None:
        """End every dispatched run whose workflow has reported, died or overstayed."""
        for run in self.store.dispatched():
            try:
                self._watch(run)
            except Exception:
                log.exception("watching dispatched run %s failed; will look again", run["id"])

    def _watch(self, run: dict[str, Any]) -> None:
        target = events.Target.model_validate(run["target"])
        client = self.github.for_installation(target.installation_id)
        ours = [
            s
            for s in client.statuses(target.repository, target.head_sha)
            if s["context"] == self.settings.status_context
        ]
        if ours and ours[0]["state"] != "pending":
            self.store.update(
                run["id"],
                state="done",
                detail=ours[0].get("description") or "",
                finished_at=_now(),
            )
            return
        if run["superseded_by"]:
            self._publisher(target, run["id"]).superseded(target.head_sha, run["superseded_by"])
            self.store.update(run["id"], state="superseded", finished_at=_now())
            return
        if run["workflow_run_id"] is not None:
            workflow = client.workflow_run(target.repository, run["workflow_run_id"])
            if workflow.get("status") == "completed":
                self._fail(
                    run,
                    f"the Actions run ended ({workflow.get('conclusion')}) without reporting "
                    "a verdict",
                )
                return
        if _now() > run["deadline"]:
            seconds = (run["deadline"] - run["created_at"]).total_seconds()
            self._fail(run, f"the Actions workflow did not report back within {seconds:.0f} s")

    # -- deliveries GitHub failed to deliver -------------------------------------------------

    def redeliver_failed(self, window: timedelta = timedelta(hours=24)) -> int:
        """Ask GitHub to redeliver what failed while we were down; it never does by itself."""
        since = datetime.now(UTC) - window
        seen = self.store.delivery_ids(since)
        asked = 0
        for delivery in self.github.failed_deliveries(since):
            if delivery["guid"] in seen:
                continue
            self.github.redeliver(delivery["id"])
            asked += 1
        if asked:
            log.info("asked GitHub to redeliver %d failed deliveries", asked)
        return asked


def _now() -> datetime:
    return datetime.now(UTC)
