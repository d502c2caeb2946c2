"""The GitHub App's work: from an accepted delivery to a final status on the pull request.

The webhook only verifies and records (a delivery, its run and the run's queue job in one
transaction); workers take the jobs (bot.app.queue) and do everything slow here. Rules:
- every run that was accepted ends with one final status, whatever happens: errors and
  supersedes end it here; a worker killed mid-run has its job handed on (`sweep`); transient
  failures are retried with backoff; a run past its deadline is ended in `error` by the
  watchdog (`sweep`); a final status GitHub did not take is posted again (`sweep`);
- a run's end is written before its final status is posted, and only by whoever moved the
  run out of an active state, so two parties never both post (bot.app.store `finish`/`posting`);
- the policy and the checks come from the base branch, never from the change;
- only the newest head SHA of a pull request gets a verdict; older runs are superseded.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from procrastinate import JobContext
from procrastinate.exceptions import JobAborted
from procrastinate.job_context import AbortReason
from pydantic import SecretStr

from bot.app import history, logs, metrics
from bot.app.queue import Transient
from bot.app.settings import Settings
from bot.app.store import ACTIVE, Store
from bot.engine.batch import settle
from bot.engine.job import Job
from bot.engine.kept import KeptBase
from bot.engine.pipeline import Cancelled, validate
from bot.github import events, pulls
from bot.github.client import GitHubClient
from bot.github.http import GitHubError
from bot.github.publish import Publisher
from bot.gitrepo import GitError, resolve
from bot.judging.verdict import Decision, Verdict
from bot.policy import LoadedPolicy, load_policy, load_policy_text
from bot.policy.loader import REPO_POLICY_PATH, default_policy_path, policy_at
from bot.policy.yamlfile import ConfigError
from bot.reporting import render_markdown
from bot.sandbox.select import factory

log = logging.getLogger("gatekeeper.service")

WRITE_PERMISSIONS = {"admin", "maintain", "write"}
# Verdicts need this many successful runs before their p95 sets the default deadline.
DEADLINE_SAMPLES = 20
# A rejected merge group's run, while it validates the group's prefixes (its detail).
SEARCHING = "rejected: looking for the pull request that breaks the group"


def transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: GitHub unreachable or overloaded, the service's
    database gone. A 4xx from GitHub (bad token, missing repository) will not heal itself."""
    if isinstance(exc, Transient | psycopg.OperationalError | psycopg_pool.PoolTimeout):
        return True
    if isinstance(exc, GitHubError):
        return exc.status is None or exc.status >= 500 or exc.status == 429
    return False


class Service:
    def __init__(self, settings: Settings, store: Store, github: GitHubClient):
        self.settings = settings
        self.store = store
        self.github = github

    def start(self) -> None:
        self.store.migrate()

    # -- one job -----------------------------------------------------------------------------

    def perform(self, run_id: int, context: JobContext) -> None:
        """The queue task: validate run `run_id` and publish its end, once."""
        with logs.bind(run_id=run_id):
            run = self.store.claim(run_id, context.job.id)
            if run is None:
                return  # ended meanwhile: superseded, or the watchdog's
            with logs.bind(delivery_id=run["delivery_id"]):
                self._perform(run, context)

    def _perform(self, run: dict[str, Any], context: JobContext) -> None:
        attempt = int(context.job.attempts or 0) + 1
        if run["attempts"] > self.settings.attempts + 2:
            self._fail(run, f"no worker finished this run in {run['attempts']} tries")
            return

        def stop(_stage: str) -> None:
            if context.should_abort():
                raise Cancelled

        try:
            self._process(run, stop, context.should_abort)
        except Cancelled:
            if context.abort_reason() == AbortReason.SHUTDOWN:
                self._requeue(run["id"], "re-queued: the worker shut down")
                raise JobAborted from None  # the retry strategy defers it again
            self._stopped(run["id"])
        except Exception as exc:
            if transient(exc) and attempt < self.settings.attempts:
                log.warning("run %s: attempt %d failed, will retry: %s", run["id"], attempt, exc)
                self._requeue(run["id"], f"attempt {attempt} failed, retrying: {exc}")
                raise Transient(str(exc)) from exc
            if transient(exc):
                self._fail(run, f"gave up after {attempt} attempts: {exc}")
            else:
                log.exception("run %s failed", run["id"])
                self._fail(run, f"internal error: {type(exc).__name__}: {exc}")

    def _requeue(self, run_id: int, why: str) -> None:
        """Show the run as queued again. Only for the record: the retry claims a `running`
        run as well, so a database that is down (often the very failure) changes nothing."""
        try:
            self.store.requeue(run_id, why)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            log.warning("run %s stays marked running until its retry: %s", run_id, exc)

    def _stopped(self, run_id: int) -> None:
        """Asked to abort: a newer SHA superseded the run, the watchdog ended it, or its merge
        group was destroyed (ended in the store by the webhook; posted here at once)."""
        run = self.store.run(run_id)
        if run["superseded_by"]:
            self._conclude(run, "superseded")
        elif run["target"].get("cancelled"):
            self.post(run_id)

    # -- one run -----------------------------------------------------------------------------

    def _process(
        self, run: dict[str, Any], stop: Callable[[str], None], aborted: Callable[[], bool]
    ) -> None:
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
            self._fail(run, f"the base branch's policy is invalid: {exc}")
            return
        checked = events.check_branches(target, loaded.policy.branches)
        if isinstance(checked, events.Ignored):
            self._finish_quietly(run, checked.reason)
            return
        if target.merge_group and loaded.policy.runner == "actions":
            self._finish_quietly(
                run,
                "runner: actions: the repository's workflow validates merge groups on its own "
                "merge_group trigger",
            )
            return
        options = {"review": loaded.policy.report.review, "labels": loaded.policy.report.labels}
        deadline = loaded.policy.timeouts.deadline
        self.store.update(
            run["id"],
            publish=options,
            deadline=run["created_at"] + timedelta(seconds=deadline) if deadline else None,
        )
        publisher = self._publisher(target, run["id"], options)
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
        resource = loaded.policy.resource
        if resource and run["resource"] != resource:
            self._block(run, target, publisher, resource)
            return
        publisher.pending(target.head_sha, "validating: merge, migrate, checks")
        check_run_id = run["check_run_id"]
        if check_run_id is None:
            check_run_id = publisher.start_check(target.head_sha)
            self.store.update(run["id"], check_run_id=check_run_id)
            if self._ended_meanwhile(run["id"], target.head_sha, publisher, check_run_id):
                return
        else:  # started before a retry or a wait for a resource: carried on
            publisher.resume_check(check_run_id)
        verdict = self._validate(
            target, stop, aborted, lambda: self.store.note(run["id"], SEARCHING)
        )
        if verdict.decision == Decision.error and _sandbox_failed(verdict):
            raise Transient(f"the sandbox did not start: {verdict.summary}")
        report = render_markdown(verdict)
        if self.store.superseding(run["id"]):
            self._conclude(
                run, "superseded", verdict=verdict.model_dump(mode="json"), report=report
            )
            return
        self._conclude(
            run,
            "done",
            decision=verdict.decision.value,
            risk=verdict.risk.value if verdict.risk else None,
            verdict=verdict.model_dump(mode="json"),
            report=report,
        )
        metrics.verdict(verdict)

    def _ended_meanwhile(
        self, run_id: int, sha: str, publisher: Publisher, check_run_id: int
    ) -> bool:
        """Whether the run ended (its merge group destroyed, the watchdog) while its check run
        was being created. A final status still owed is posted with the check run's id, now
        recorded, by whoever posts it; one already posted went out without it, so the check
        run is completed here: never left in progress, and the status is not posted twice."""
        now = self.store.run(run_id)
        if now["state"] in ACTIVE:
            return False
        if not now["unposted"]:
            reason = now["detail"] or f"the run ended ({now['state']})"
            conclusion = "cancelled" if now["target"].get("cancelled") else "failure"
            publisher.end_check(sha, check_run_id, conclusion, reason)
        return True

    def _block(
        self, run: dict[str, Any], target: events.Target, publisher: Publisher, resource: str
    ) -> None:
        """Wait in line for `resource` rather than fail: a job under its lock takes over."""
        place = self.store.block(run["id"], resource)
        detail = f"waiting for {resource}: {_ordinal(place)} in line"
        self.store.update(run["id"], detail=detail)
        publisher.pending(target.head_sha, detail)
        check_run_id = run["check_run_id"] or publisher.start_check(target.head_sha)
        publisher.queued(check_run_id, detail, resource, place)
        self.store.update(run["id"], check_run_id=check_run_id)

    def _target(self, run: dict[str, Any]) -> events.Target | None:
        """The run's Target, completed from the pull request where the event left gaps: a
        `/gatekeeper` comment has no head SHA, check events name no author."""
        data = run["target"]
        if data.get("kind") != "needs-pull-request":
            target = events.Target.model_validate(data)
            if target.needs_pr_lookup:
                return self._push(run, target)
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
        if not self.store.resolve(run["id"], routed.model_dump(mode="json"), approved=True):
            return None  # a newer run of the pull request validates instead
        return routed

    def _push(self, run: dict[str, Any], push: events.Target) -> events.Target | None:
        """A push to a branch is validated as its open pull request: the pull_request
        delivery may never come (lost, or an App subscribed to pushes only). When it does come,
        its run validates the commit and this one ends without a word (`Store.adopt`)."""
        client = self.github.for_installation(push.installation_id)
        routed = pulls.open_pull_of_push(push, client)
        if isinstance(routed, events.Ignored):
            self._finish_quietly(run, routed.reason)
            return None
        other = self.store.adopt(run["id"], routed.model_dump(mode="json"))
        if other is not None:
            self._finish_quietly(
                run, f"#{routed.pr_number} at {routed.head_sha[:7]} is validated by run {other}"
            )
            return None
        return routed

    def _finish_quietly(self, run: dict[str, Any], reason: str) -> None:
        """Nothing was posted for this run: it ends in the store only."""
        self.store.finish(run["id"], "ignored", post=False, detail=reason)

    # -- the end of a run: written, then posted once -----------------------------------------

    def _conclude(self, run: dict[str, Any], state: str, **fields: Any) -> bool:
        """End the run in the store, then post its final status; False (and nothing posted)
        when someone else ended it first."""
        owed = self.store.finish(run["id"], state, post=True, **fields)
        if owed is None:
            return False
        if owed:
            self.post(run["id"])
        return True

    def _fail(self, run: dict[str, Any], reason: str) -> None:
        self._conclude(run, "error", detail=reason)

    def post(self, run_id: int) -> None:
        """Post run `run_id`'s final status if it is still owed; a failure leaves it owed,
        for `sweep` to post again."""
        try:
            with self.store.posting(run_id) as owed:
                if owed:
                    self._post_final(self.store.run(run_id))
        except Exception:
            log.exception("posting the final status of run %s failed; will try again", run_id)

    def _post_final(self, run: dict[str, Any]) -> None:
        """The final status as the run's row describes it: posting twice shows the same."""
        target = events.Target.model_validate(run["target"])
        publisher = self._publisher(target, run["id"], run["publish"])
        sha, check_run_id = target.head_sha, run["check_run_id"]
        if run["target"].get("cancelled"):
            publisher.cancelled(sha, run["detail"], check_run_id=check_run_id)
        elif run["state"] == "superseded":
            publisher.superseded(sha, run["superseded_by"], check_run_id=check_run_id)
        elif run["state"] == "done" and run["verdict"] is not None:
            publisher.finish(
                sha,
                Verdict.model_validate(run["verdict"]),
                run["report"] or "",
                check_run_id=check_run_id,
                pr_number=target.pr_number,
            )
        else:
            publisher.error(
                sha, run["detail"], check_run_id=check_run_id, pr_number=target.pr_number
            )

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

    def _validate(
        self,
        target: events.Target,
        stop: Callable[[str], None],
        aborted: Callable[[], bool],
        searching: Callable[[], None],
    ) -> Verdict:
        """`stop` ends the run between stages; `aborted` pre-empts a stage that hangs. A merge
        group that is rejected is searched for the pull request that breaks it (`searching`
        is told), with the same two: a group destroyed mid-search stops like one mid-run."""
        token = self.github.token_for(target.installation_id)
        with tempfile.TemporaryDirectory(prefix="gatekeeper-clone-") as tmp:
            clone = Path(tmp) / "repo"
            self._clone(target, clone, token)
            try:
                # After a merge the base branch already holds the change: compare the merge
                # commit with its first parent, the target as it was before.
                base = f"{target.head_sha}^1" if target.merged else None
                base_sha = resolve(clone, base or target.base_sha or f"origin/{target.base_ref}")
                resolve(clone, target.head_sha)
            except GitError as exc:
                raise RuntimeError(f"cannot validate: {exc}") from None
            with policy_at(clone, base_sha, self.settings.default_policy) as loaded:
                job = events.to_job(target, base_sha).model_copy(
                    update={"policy_source": loaded.source}
                )

                def run(one: Job, where: Path, kept: KeptBase | None = None) -> Verdict:
                    return validate(
                        one,
                        where,
                        loaded,
                        factory(),
                        progress=stop,
                        cancelled=aborted,
                        secrets=[*self._secrets(), token],
                        kept=kept,
                    )

                if not target.merge_group:
                    return run(job, clone)
                client = self.github.for_installation(target.installation_id)
                chain = pulls.group_chain(clone, target, client, job)
                return settle(chain, chain.base, run, searching)

    def _secrets(self) -> list[str]:
        """The service's SecretStr settings: they may come from elsewhere than the
        environment, which validate masks by itself."""
        values = (getattr(self.settings, name) for name in type(self.settings).model_fields)
        return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]

    def _clone(self, target: events.Target, dest: Path, token: str) -> None:
        """Clone with the installation token in an HTTP header given to these two git calls
        only (through the environment), never in the URL: the clone's .git/config, which the
        change's code could read, holds no credential."""
        url = _without_credentials(
            self.settings.clone_url.format(token="", repository=target.repository)
        )
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env = {  # our own git: the operator's proxy and CA settings apply
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }
        head_ref = (
            f"+refs/pull/{target.pr_number}/head:refs/gatekeeper/head"
            if target.pr_number is not None
            else target.head_sha
        )
        for args in (
            ["clone", "--quiet", "--no-checkout", url, str(dest)],
            ["-C", str(dest), "fetch", "--quiet", "origin", head_ref],
        ):
            proc = subprocess.run(
                ["git", *args], capture_output=True, text=True, check=False, env=env
            )
            if proc.returncode != 0:
                # The URL carries the token: never let it into a message.
                message = proc.stderr.replace(token, "***").strip()
                raise Transient(f"git {args[0] if args[0] != '-C' else args[2]} failed: {message}")

    def _publisher(
        self, target: events.Target, run_id: int, options: dict[str, bool] | None = None
    ) -> Publisher:
        """`options` are the base policy's report switches (review, labels), kept on the run
        so that a status posted again later reports the same way."""
        options = options or {}
        return Publisher(
            self.github.for_installation(target.installation_id),
            target.repository,
            context=self.settings.status_context,
            report_url=self._report_url(run_id),
            review=bool(options.get("review")),
            labels=bool(options.get("labels")),
        )

    def _report_url(self, run_id: int) -> str | None:
        if not self.settings.public_url:
            return None
        return f"{self.settings.public_url.rstrip('/')}/runs/{run_id}/report"

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
        for run in self.store.in_state("dispatched"):
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
            detail = ours[0].get("description") or ""
            self.store.finish(run["id"], "done", post=False, detail=detail)
            return
        if run["superseded_by"]:
            self._conclude(run, "superseded")
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

    # -- the sweep: what no worker does by itself --------------------------------------------

    def sweep(self) -> None:
        """Run every few seconds by each `serve` and `worker` process. Every step is a
        conditional update, so several processes sweeping at once do each thing once."""
        for step in (
            self._recover_stalled,
            self._end_overdue,
            self._post_owed,
            self._show_places,
        ):
            try:
                step()
            except Exception:
                log.exception("sweep: %s failed; the next sweep tries again", step.__name__)

    def _recover_stalled(self) -> None:
        with self.store.connect() as conn:
            handed_on = self.store.jobs.recover_stalled(conn, self.settings.stalled_after)
        if handed_on:
            log.warning("jobs %s of workers that stopped answering are queued again", handed_on)

    def deadline(self) -> tuple[float, str]:
        """Seconds from delivery to final status for runs whose policy sets none, and why."""
        p95, samples = self.store.p95_seconds()
        if p95 is None or samples < DEADLINE_SAMPLES:
            return self.settings.deadline, (
                f"the default deadline of {self.settings.deadline:.0f} s "
                f"(only {samples} successful runs to learn from)"
            )
        margin = self.settings.deadline_margin
        return p95 + margin, (
            f"{p95 + margin:.0f} s, the p95 of the last {samples} successful runs "
            f"({p95:.0f} s) plus {margin:.0f} s"
        )

    def _end_overdue(self) -> None:
        """The watchdog: a run still unfinished at its deadline ends in `error`, its job is
        cancelled (a running one stops at its next stage)."""
        seconds, why = self.deadline()
        for run in self.store.overdue(seconds):
            limit = why
            if run["deadline"] is not None:
                own = (run["deadline"] - run["created_at"]).total_seconds()
                limit = f"the policy's timeouts.deadline of {own:.0f} s"
            with logs.bind(run_id=run["id"], delivery_id=run["delivery_id"]):
                if not self._conclude(run, "error", detail=f"no verdict within {limit}"):
                    continue
                log.warning("run %s ended by the watchdog after %s", run["id"], limit)
                if run["job_id"] is not None:
                    with self.store.connect() as conn:
                        self.store.jobs.cancel(conn, run["job_id"])

    def _post_owed(self) -> None:
        for run in self.store.unposted(self.settings.repost_after):
            with logs.bind(run_id=run["id"], delivery_id=run["delivery_id"]):
                self.post(run["id"])

    def _show_places(self) -> None:
        """Runs waiting for a shared resource see their place in line move on the check run."""
        for run in self.store.in_state("blocked"):
            place = self.store.place(run)
            detail = f"waiting for {run['resource']}: {_ordinal(place)} in line"
            if detail == run["detail"] or run["check_run_id"] is None:
                continue
            self.store.update(run["id"], detail=detail)
            target = events.Target.model_validate(run["target"])
            publisher = self._publisher(target, run["id"], run["publish"])
            publisher.queued(run["check_run_id"], detail, run["resource"], place)

    def purge(self) -> None:
        purged = history.purge(self.store, timedelta(days=self.settings.retention_days))
        if purged.runs or purged.deliveries:
            log.info("purged %d runs and %d deliveries", purged.runs, purged.deliveries)

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


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _sandbox_failed(verdict: Verdict) -> bool:
    """The sandbox did not come up: the machine's fault, worth another attempt later."""
    return (
        bool(verdict.stages) and verdict.stages[-1].name == "sandbox" and not verdict.stages[-1].ok
    )


def _without_credentials(url: str) -> str:
    """`url` without its user:password@ part (GATEKEEPER_CLONE_URL may still carry one)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
