"""The GitHub Actions edge: `gatekeeper validate --github-event "$GITHUB_EVENT_PATH"`.

A workflow step gets the same payload a webhook delivery carries (in the file named by
`GITHUB_EVENT_PATH`, with the event's name in `GITHUB_EVENT_NAME`), so the step maps it to work
through `bot.github.events`, exactly as the webhook service does: `route`, `check_branches`,
`to_job`.
Only what Actions adds is handled here:

- `workflow_dispatch` (a person, or the service's dispatch mode) names the work in `inputs`
  (base_sha, head_sha, pr_number, run_id, merged...), not in a webhook shape;
- `push` names no pull request: it is looked up through the API (with `GITHUB_TOKEN`), and
  so are a `merge_group`'s pull requests, which its report lists (bot.github.pulls);
- what the step hands back to the workflow: the report in `$GITHUB_STEP_SUMMARY`, outputs in
  `$GITHUB_OUTPUT`, `::error`/`::warning` annotations on migration lines, report.md and
  verdict.json in a directory for `actions/upload-artifact`, and the decision's exit code.

Events that are not work end in `decision=skipped` and exit 0, because a required check that
failed on every pull request the gate does not apply to would block all of them. An event
Gatekeeper does not know (`deployment`, for one) is an error (exit 2): its green job could
stand for a validation nobody ran. A `merge_group` is validated like the webhook's: its head
against its base, with the status on the group's head. The other exception fails closed
(exit 2) too: an open, non-draft pull request from a builder branch into a target branch
whose event did not run the gate (e.g. a workflow also triggered on `labeled`). Its job check
would otherwise turn green over the verdict of the same commit, and branch protection reads
the latest check of a name.

The step runs the change's code (build commands, the API under test), so the token is taken
out of the environment before anything runs: child processes never inherit it.
"""

from __future__ import annotations

import secrets
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bot.engine.job import Job
from bot.github import events, pulls
from bot.github.limits import annotations, truncate_markdown, utf8_size
from bot.github.payload import PayloadRefused
from bot.github.payload import parse as parse_payload
from bot.gitrepo import GitError, resolve
from bot.judging.verdict import EXIT_CODES, Decision, Verdict
from bot.policy import LoadedPolicy, load_policy
from bot.policy.loader import policy_at
from bot.policy.yamlfile import ConfigError
from bot.reporting import render_markdown, write_outputs

# GitHub refuses a step summary over 1 MiB (the step then shows an error instead of it).
STEP_SUMMARY_LIMIT = 1024 * 1024
# GitHub shows at most 10 errors and 10 warnings per step and 50 annotations per job; the
# report lists every finding, so a few more than shown are emitted and the rest left out.
ANNOTATIONS_MAX = 50
DEFAULT_OUT = Path("gatekeeper-report")
MAX_EVENT_BYTES = 25 * 1024 * 1024  # GitHub caps webhook payloads, and so event files
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
_LEVEL_COMMANDS = {"failure": "error", "warning": "warning", "notice": "notice"}
_PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")


class ActionsError(Exception):
    """The step cannot even start: unreadable event file, missing inputs, no token for a
    lookup. The message says what to change in the workflow; the step exits 2."""


# -- workflow_dispatch inputs ---------------------------------------------------------------


@dataclass(frozen=True)
class DispatchInputs:
    """What a `workflow_dispatch` (or a `workflow_call` from one) asks to validate.

    The service's dispatch mode sends base_sha, head_sha, pr_number and run_id; a person
    usually gives a branch (head_ref) or a pull request number. Values arrive as strings in
    the event file (GitHub's `github.event.inputs`), booleans as "true"/"false".
    """

    base_ref: str | None = None
    head_ref: str | None = None
    base_sha: str | None = None
    head_sha: str | None = None
    pr_number: int | None = None
    run_id: str | None = None
    merged: bool = False

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> DispatchInputs:
        raw = payload.get("inputs") or {}
        if not isinstance(raw, dict):
            raise ActionsError("the event's inputs are not an object")

        def text(name: str) -> str | None:
            value = raw.get(name)
            if value is None or isinstance(value, bool):
                return None
            return str(value).strip() or None

        number = text("pr_number")
        if number is not None and not number.isdigit():
            raise ActionsError(f"input pr_number must be a number, got '{number}'")
        merged = raw.get("merged", False)
        return cls(
            base_ref=text("base_ref"),
            head_ref=text("head_ref"),
            base_sha=text("base_sha"),
            head_sha=text("head_sha"),
            pr_number=int(number) if number else None,
            run_id=text("run_id"),
            merged=merged is True or str(merged).strip().lower() == "true",
        )


# -- lookups that need the API --------------------------------------------------------------


# The API reads some events need (a push names no pull request, a dispatch a number, a merge
# group several): a `bot.github.client.GitHubClient`, or `_NoApi` when the step has no token.
PullRequests = pulls.PullRequests


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


# -- what the step writes -------------------------------------------------------------------


def escape_data(text: str) -> str:
    """A workflow command's message: GitHub unescapes %25, %0D and %0A."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also `:` and `,`, which end a property."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: object) -> str:
    props = ",".join(
        f"{name}={escape_property(str(value))}"
        for name, value in properties.items()
        if value is not None
    )
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def annotation_commands(verdict: Verdict, path_prefix: str = "") -> list[str]:
    """`::error`/`::warning`/`::notice` for the findings located on a line of a file, riskiest
    first: the same selection the check run annotates (high and critical are errors)."""
    lines = []
    for note in annotations(verdict, limit=ANNOTATIONS_MAX):
        message = note["message"]
        if note.get("raw_details"):
            message += "\n" + note["raw_details"]
        lines.append(
            workflow_command(
                _LEVEL_COMMANDS[note["annotation_level"]],
                message,
                file=path_prefix + note["path"],
                line=note["start_line"],
                endLine=note["end_line"],
                col=note.get("start_column"),
                title=note["title"],
            )
        )
    return lines


def _delimiter(value: str) -> str:
    while True:
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        if delimiter not in value:
            return delimiter


def write_github_output(path: Path, values: Mapping[str, str], multiline: set[str]) -> None:
    """Append outputs in GitHub's file format: `name=value`, or for any value that could
    hold a newline `name<<DELIM`, the value, `DELIM`, with a random delimiter (a fixed one
    could appear in the value and let it set other outputs)."""
    lines = []
    for name, value in values.items():
        if name in multiline or "\n" in value or "\r" in value:
            delimiter = _delimiter(value)
            lines += [f"{name}<<{delimiter}", value, delimiter]
        else:
            lines.append(f"{name}={value}")
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def append_step_summary(path: Path, markdown: str, note: str) -> None:
    """Append the report, cut (at a line end, code blocks closed, `note` after it) so the
    step's summary stays within GitHub's 1 MiB, counting what the step wrote before."""
    used = path.stat().st_size if path.exists() else 0
    room = max(STEP_SUMMARY_LIMIT - used, 0)
    text = truncate_markdown(markdown, room, note) if utf8_size(markdown) > room else markdown
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def summary_note(env: Mapping[str, str], out: Path) -> str:
    return (
        f"\n\n---\n✂️ Cut to fit GitHub's 1 MiB step summary; the full `report.md` is in "
        f"`{out}` (the run's artifact){_run_link(env)}.\n"
    )


def _run_link(env: Mapping[str, str]) -> str:
    url = run_url(env)
    return f", see {url}" if url else ""


def run_url(env: Mapping[str, str]) -> str | None:
    server, repo, run = (
        env.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if server and repo and run:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{run}"
    return None


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


Validator = Callable[[Job, Path, LoadedPolicy], Verdict]
# (repository, policy) -> a bot.github.publish.Publisher: the policy asks for reviews, labels.
PublisherFactory = Callable[[str, LoadedPolicy], Any]


def take_token(environ: MutableMapping[str, str]) -> str | None:
    """Read the token, then remove every credential variable from the environment, so that
    no process the pipeline starts (build commands, the API under test) inherits one."""
    token = (environ.get(TOKEN_ENV) or environ.get("GATEKEEPER_GITHUB_TOKEN") or "").strip()
    for name in _SCRUBBED_ENV:
        environ.pop(name, None)
    return token or None


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
            if checked.merge_group:
                job.batch = pulls.group_members(repo, checked, lookups or _NoApi())
            if options.post and publisher_factory is not None:
                publisher = publisher_factory(checked.repository, loaded)
                publisher.pending(job.head_sha, "validating: merge, migrate, checks")
                publisher.start_check(job.head_sha)
            log(f"validating {job.head_ref} ({job.head_sha[:7]}) into {job.base_ref}")
            try:
                verdict = validator(job, repo, loaded)
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
