"""The GitHub Actions edge: `gatekeeper validate --github-event "$GITHUB_EVENT_PATH"`, the step
from its event file to its exit code.

A workflow step gets the same payload a webhook delivery carries (in the file named by
`GITHUB_EVENT_PATH`, with the event's name in `GITHUB_EVENT_NAME`). `run_step` ties the step
together: the event becomes a Target and a base commit (`bot.actions.event`), the base commit's
policy says whether it is work (`bot.github.events.check_branches`, as in the webhook service),
the Target becomes a Job (`to_job`; a `merge_group`'s pull requests, which its report lists,
looked up through bot.github.pulls) and is validated. Then the step hands back to the workflow
(`bot.actions.outputs` writes GitHub's formats): the report in `$GITHUB_STEP_SUMMARY`, outputs
in `$GITHUB_OUTPUT`, `::error`/`::warning` annotations on migration lines, report.md and
verdict.json in a directory for `actions/upload-artifact`, and the decision's exit code.

Events that are not work end in `decision=skipped` and exit 0, because a required check that
failed on every pull request the gate does not apply to would block all of them. An event
Gatekeeper does not know (`deployment`, for one) is an error (exit 2): its green job could
stand for a validation nobody ran. A `merge_group` is validated like the webhook's: its head
against its base, with the status on the group's head, and a rejected group is searched for
the pull request that broke it (bot.engine.batch). The other exception fails closed
(exit 2) too: an open, non-draft pull request from a builder branch into a target branch
whose event did not run the gate (e.g. a workflow also triggered on `labeled`). Its job check
would otherwise turn green over the verdict of the same commit, and branch protection reads
the latest check of a name.

The step runs the change's code (build commands, the API under test), so the token is taken
out of the environment before anything runs: child processes never inherit it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bot.actions.dispatch import DispatchInputs
from bot.actions.errors import ActionsError
from bot.actions.event import (
    _FETCH_HINT,
    PullRequests,
    _repository,
    base_commit,
    read_event,
    resolve_in_checkout,
    resolve_target,
)
from bot.actions.outputs import (
    annotation_commands,
    append_step_summary,
    summary_note,
    workflow_command,
    write_github_output,
)
from bot.engine.batch import settle
from bot.engine.job import Job
from bot.engine.kept import KeptBase
from bot.github import events, pulls
from bot.gitrepo import GitError, resolve
from bot.judging.verdict import EXIT_CODES, Decision, Verdict
from bot.policy import LoadedPolicy, load_policy
from bot.policy.loader import policy_at
from bot.policy.yamlfile import ConfigError
from bot.reporting import render_markdown, write_outputs

DEFAULT_OUT = Path("gatekeeper-report")
SKIPPED = "skipped"
EXIT_ERROR = EXIT_CODES[Decision.error]
# Variables a step may hold that the change's code must never see. The token is read first.
TOKEN_ENV = "GITHUB_TOKEN"
_SCRUBBED_ENV = (
    TOKEN_ENV,
    "GH_TOKEN",
    "GATEKEEPER_GITHUB_TOKEN",
    "ACTIONS_RUNTIME_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
)
_PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")


# -- the step -------------------------------------------------------------------------------


@dataclass
class StepOptions:
    event_path: Path
    event_name: str
    repo: Path = Path(".")
    policy: Path | None = None
    out: Path = DEFAULT_OUT
    post: bool = False
    comment: bool = True
    context: str = "gatekeeper"


@dataclass
class StepResult:
    """What the step decided; `verdict` is None for skipped events and early errors."""

    decision: str
    exit_code: int
    verdict: Verdict | None = None
    reason: str = ""
    report_path: Path | None = None
    verdict_path: Path | None = None
    outputs: dict[str, str] = field(default_factory=dict)


# (job, checkout, policy, a batch's kept base: bot/engine/kept.py) -> verdict
Validator = Callable[[Job, Path, LoadedPolicy, KeptBase | None], Verdict]
# (repository, policy) -> a bot.github.publish.Publisher: the policy asks for reviews, labels.
PublisherFactory = Callable[[str, LoadedPolicy], Any]


def take_token(environ: MutableMapping[str, str]) -> str | None:
    """Read the token, then remove every credential variable from the environment, so that
    no process the pipeline starts (build commands, the API under test) inherits one."""
    token = (environ.get(TOKEN_ENV) or environ.get("GATEKEEPER_GITHUB_TOKEN") or "").strip()
    for name in _SCRUBBED_ENV:
        environ.pop(name, None)
    return token or None


class _NoApi:
    """Stands in when the step has no token: says how to give it one."""

    def _refuse(self, why: str) -> ActionsError:
        return ActionsError(
            f"{why}: gatekeeper must ask the API, so pass the token to the step "
            f"(env {TOKEN_ENV}: ${{{{ github.token }}}}, with permission pull-requests: read)"
        )

    def pull_request(self, repo: str, number: int) -> dict[str, Any]:
        raise self._refuse(f"pull request #{number} must be read")

    def pulls_for_commit(self, repo: str, sha: str) -> list[dict[str, Any]]:
        raise self._refuse(f"the pull requests of {sha[:7]} must be looked up")


def run_step(
    options: StepOptions,
    validator: Validator,
    *,
    lookups: PullRequests | None,
    publisher_factory: PublisherFactory | None,
    env: Mapping[str, str],
    stdout: TextIO = sys.stdout,
    log: Callable[[str], None] = lambda _line: None,
) -> StepResult:
    """Event file in, outputs written, exit code out. Never raises for a bad event or input:
    those end in `error` (exit 2) with the reason in the step summary and as `::error`."""
    repo = options.repo.resolve()
    try:
        payload = read_event(options.event_path)
        target = resolve_target(
            options.event_name,
            payload,
            lookups or _NoApi(),
            lambda ref: resolve_in_checkout(repo, ref),
        )
    except (ActionsError, events.PayloadError, GitError) as exc:
        return _finish_error(options, env, stdout, str(exc), None, None)
    except Exception as exc:  # an API lookup failed: the gate could not decide
        return _finish_error(options, env, stdout, f"{type(exc).__name__}: {exc}", None, None)
    if isinstance(target, events.Ignored):
        missed = _gate_should_have_run(options, payload, repo)
        if not target.known:
            missed = (
                f"{target.reason}: Gatekeeper does not validate it, and a green job would "
                "look like a validation; remove the event from the workflow's triggers"
            )
        if missed:
            return _finish_error(options, env, stdout, missed, None, None)
        return _finish_skipped(options, env, target.reason)
    try:
        base_sha = base_commit(repo, target)
        resolve(repo, target.head_sha)
    except GitError as exc:
        message = str(exc) if _FETCH_HINT in str(exc) else f"{exc}; {_FETCH_HINT}"
        return _finish_error(options, env, stdout, message, target, None)
    publisher = None
    try:
        with policy_for(repo, base_sha, options.policy) as loaded:
            checked = events.check_branches(target, loaded.policy.branches)
            if isinstance(checked, events.Ignored):
                return _finish_skipped(options, env, checked.reason)
            if options.event_name == "pull_request_target" and not events.trusted(checked):
                reason = (
                    "refusing to run the code of a fork or of an author without write access "
                    "on pull_request_target, where the step holds the base repository's "
                    "secrets; trigger the gate on pull_request instead"
                )
                return _finish_error(options, env, stdout, reason, checked, None)
            job = events.to_job(checked, base_sha).model_copy(
                update={"policy_source": loaded.source}
            )
            chain = None
            if checked.merge_group:
                chain = pulls.group_chain(repo, checked, lookups or _NoApi(), job)
                job = chain.base
            if options.post and publisher_factory is not None:
                publisher = publisher_factory(checked.repository, loaded)
                publisher.pending(job.head_sha, "validating: merge, migrate, checks")
                publisher.start_check(job.head_sha)
            log(f"validating {job.head_ref} ({job.head_sha[:7]}) into {job.base_ref}")
            try:
                if chain is None:
                    verdict = validator(job, repo, loaded, None)
                else:
                    verdict = settle(
                        chain,
                        job,
                        lambda one, where, kept: validator(one, where, loaded, kept),
                        lambda: log(
                            "the merge group is rejected: looking for the pull request "
                            "that breaks it"
                        ),
                    )
            except KeyboardInterrupt:
                # Cancelled (a newer push with cancel-in-progress, or by hand): never leave
                # the posted status pending.
                if publisher is not None:
                    with suppress(Exception):
                        publisher.error(job.head_sha, "the workflow run was cancelled")
                raise
    except (ConfigError, ActionsError) as exc:
        return _finish_error(options, env, stdout, str(exc), target, publisher)
    except Exception as exc:
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return _finish_error(options, env, stdout, reason, target, publisher)
    return _finish_verdict(options, env, stdout, verdict, checked, publisher)


@contextmanager
def policy_for(repo: Path, base_sha: str, explicit: Path | None) -> Iterator[LoadedPolicy]:
    """--policy wins; otherwise the base commit's own policy, else the default (as the CLI
    and the service read it: never from the change)."""
    if explicit is not None:
        yield load_policy(explicit)
    else:
        with policy_at(repo, base_sha) as loaded:
            yield loaded


def _gate_should_have_run(options: StepOptions, payload: dict[str, Any], repo: Path) -> str | None:
    """Why exiting 0 would be wrong: the event did not run the gate, yet it concerns an open,
    non-draft pull request from a builder branch into a target branch (see the module doc).
    None when skipping is right, or when that cannot be told (nothing then claims a verdict).
    """
    if options.event_name not in _PULL_REQUEST_EVENTS:
        return None
    pull = payload.get("pull_request")
    if not isinstance(pull, dict) or pull.get("draft"):
        return None
    try:
        repository, _ = _repository(payload)
        probe = events.target_from_pull_request(pull, repository, None, options.event_name)
        if isinstance(probe, events.Ignored):
            return None
        base_sha = base_commit(repo, probe)
        with policy_for(repo, base_sha, options.policy) as loaded:
            checked = events.check_branches(probe, loaded.policy.branches)
    except (events.PayloadError, GitError, ConfigError):
        return None
    if isinstance(checked, events.Ignored):
        return None
    action = payload.get("action")
    return (
        f"the gate did not run for '{options.event_name}.{action}' on the builder pull request "
        f"#{checked.pr_number} ({checked.head_ref} into {checked.base_ref}); failing, so that "
        "this job cannot pass in place of a verdict. Trigger the workflow on pull_request "
        "types opened, reopened, synchronize and ready_for_review only"
    )


def _outputs(result: StepResult, env: Mapping[str, str]) -> None:
    path = env.get("GITHUB_OUTPUT")
    if path:
        multiline = {"report-path", "verdict-path", "summary", "reason"}
        write_github_output(Path(path), result.outputs, multiline)


def _common_outputs(result: StepResult, run_id: str | None) -> dict[str, str]:
    verdict = result.verdict
    values = {
        "decision": result.decision,
        "risk": verdict.risk.value if verdict is not None and verdict.risk else "",
        "exit-code": str(result.exit_code),
        "report-path": str(result.report_path or ""),
        "verdict-path": str(result.verdict_path or ""),
        "summary": verdict.summary if verdict is not None else result.reason,
    }
    if result.reason:
        values["reason"] = result.reason
    if run_id:
        values["run-id"] = run_id
    return values


def _run_id(options: StepOptions) -> str | None:
    if options.event_name != "workflow_dispatch":
        return None
    try:
        return DispatchInputs.from_payload(read_event(options.event_path)).run_id
    except ActionsError:
        return None


def _finish_skipped(options: StepOptions, env: Mapping[str, str], reason: str) -> StepResult:
    """Not work: nothing is posted (as in the service), decision=skipped, exit 0."""
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    text = (
        "# ⏭️ Gatekeeper: SKIPPED\n\n"
        f"The gate did not run: {reason}.\n\n"
        "Nothing was validated and no status was posted; this step passes because the gate "
        "does not apply to this event.\n"
    )
    report.write_text(text, encoding="utf-8")
    result = StepResult(SKIPPED, 0, reason=reason, report_path=report)
    result.outputs = _common_outputs(result, _run_id(options))
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_step_summary(Path(summary), text, summary_note(env, options.out))
    _outputs(result, env)
    return result


def _error_verdict(reason: str, target: events.Target | None, options: StepOptions) -> Verdict:
    job: dict[str, Any] = {
        "repository": target.repository if target else "",
        "base_ref": (target.base_ref or "") if target else "",
        "head_ref": target.head_ref if target else "",
        "base_sha": (target.base_sha or "") if target else "",
        "head_sha": target.head_sha if target else "",
        "merge_sha": None,
        "pr_number": target.pr_number if target else None,
        "author": target.author if target else None,
        "trigger": target.trigger if target else options.event_name,
        "policy_source": str(options.policy or ""),
    }
    return Verdict(
        decision=Decision.error,
        risk=None,
        summary=f"Gatekeeper could not run: {' '.join(reason.split())}",
        reasons=[reason],
        job=job,
    )


def _finish_error(
    options: StepOptions,
    env: Mapping[str, str],
    stdout: TextIO,
    reason: str,
    target: events.Target | None,
    publisher: Any,
) -> StepResult:
    verdict = _error_verdict(reason, target, options)
    if publisher is not None and target is not None:
        try:
            publisher.error(target.head_sha, reason, pr_number=target.pr_number)
        except Exception as exc:  # the step fails with exit 2 anyway; say why posting failed
            reason += f" (and the error status could not be posted: {exc})"
    stdout.write(workflow_command("error", reason, title="Gatekeeper could not run") + "\n")
    return _write(options, env, verdict, reason)


def _finish_verdict(
    options: StepOptions,
    env: Mapping[str, str],
    stdout: TextIO,
    verdict: Verdict,
    target: events.Target,
    publisher: Any,
) -> StepResult:
    report_md = render_markdown(verdict)
    problem = ""
    if publisher is not None:
        try:
            publisher.finish(
                target.head_sha,
                verdict,
                report_md,
                pr_number=target.pr_number if options.comment else None,
            )
        except Exception as exc:  # the gate's signal is missing: the step cannot pass
            problem = f"the verdict ({verdict.decision}) could not be posted to GitHub: {exc}"
            # `finish` may have stopped between the status and the check run, or before either:
            # never leave one pending, or an approval beside a failed step.
            with suppress(Exception):
                publisher.error(target.head_sha, problem, pr_number=target.pr_number)
    for line in annotation_commands(verdict, _path_prefix(options.repo, env)):
        stdout.write(line + "\n")
    result = _write(options, env, verdict, problem)
    if problem:
        stdout.write(workflow_command("error", problem, title="Gatekeeper") + "\n")
        result.exit_code = EXIT_ERROR
        result.outputs["exit-code"] = str(EXIT_ERROR)
    return result


def _write(
    options: StepOptions, env: Mapping[str, str], verdict: Verdict, reason: str
) -> StepResult:
    out = options.out.resolve()
    report, verdict_path = write_outputs(verdict, out)
    result = StepResult(
        verdict.decision.value,
        verdict.exit_code,
        verdict=verdict,
        reason=reason if verdict.decision is Decision.error else "",
        report_path=report,
        verdict_path=verdict_path,
    )
    result.outputs = _common_outputs(result, _run_id(options))
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_step_summary(
            Path(summary), report.read_text(encoding="utf-8"), summary_note(env, options.out)
        )
    _outputs(result, env)
    return result


def _path_prefix(repo: Path, env: Mapping[str, str]) -> str:
    """Annotations name files relative to the workspace; the repository may be checked out
    in a subdirectory of it (actions/checkout `path:`)."""
    workspace = env.get("GITHUB_WORKSPACE")
    if not workspace:
        return ""
    try:
        relative = repo.resolve().relative_to(Path(workspace).resolve())
    except ValueError:
        return ""
    return "" if str(relative) == "." else f"{relative.as_posix()}/"
