"""The `gatekeeper` command line: an edge that builds a Job and prints the Verdict.

Exit codes (one table for every entry point, see the README): 0 approve, 1 reject,
3 review, 2 error (including bad input: a malformed policy, an unknown ref). 130 when
interrupted, after cleaning up.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bot.actions.run import DEFAULT_OUT, StepOptions, policy_for
from bot.app import history
from bot.checking import load_suites
from bot.cli import demo as demo_module
from bot.engine.job import BatchMember, Job
from bot.engine.kept import KeptBase
from bot.engine.pipeline import validate as run_validation
from bot.gitrepo import GitError, resolve
from bot.judging.verdict import EXIT_CODES, Decision, Verdict
from bot.policy import LoadedPolicy, Policy, load_policy
from bot.policy.yamlfile import ConfigError
from bot.reporting import write_outputs
from bot.sandbox.base import EngineUnavailable, SandboxError
from bot.sandbox.local import unwind_on_interrupts
from bot.sandbox.select import KINDS, check_engine, factory, kind_of

if TYPE_CHECKING:
    from bot.app.store import Store
    from bot.github.client import GitHubClient
    from bot.github.publish import Publisher

# pretty_exceptions off: an unexpected exception is main()'s to report, as exit 2.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=__doc__.split("\n")[0],
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(no_args_is_help=True, help="Check policies and print their schema.")
app.add_typer(policy_app, name="policy")
# Logs and CI capture stderr without a terminal; rich would then assume 80 columns.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)

EXIT_ERROR = EXIT_CODES[Decision.error]


def fail(message: str) -> NoReturn:
    _print_error(message)
    raise typer.Exit(EXIT_ERROR)


def _print_error(message: str) -> None:
    # escape: messages quote paths, SQL and logs, whose brackets are not rich markup.
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


@app.command()
def validate(
    repo: Annotated[Path, typer.Option(help="Path of the git repository.")] = Path("."),
    base: Annotated[
        str | None, typer.Option(help="Target branch or commit (default: main).")
    ] = None,
    head: Annotated[
        list[str] | None,
        typer.Option(
            help="Builder branch or commit to validate (required without --github-event). "
            "Repeat it to validate a batch: the heads merged in order onto the base, and when "
            "the batch is rejected, the head that breaks it named."
        ),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Policy file (default: the base's .github/gatekeeper.yml)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for report.md and verdict.json (with --github-event: "
            "gatekeeper-report)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict JSON on stdout.")
    ] = False,
    sandbox: Annotated[
        str | None,
        typer.Option(
            help="local (PostgreSQL and the API as processes) or containers (the PR's "
            "Dockerfile and a PostgreSQL image); default: the policy's `sandbox`."
        ),
    ] = None,
    github_event: Annotated[
        Path | None,
        typer.Option(
            "--github-event",
            help="GitHub Actions: the event file ($GITHUB_EVENT_PATH); base, head and pull "
            "request come from it, the event's name from $GITHUB_EVENT_NAME.",
        ),
    ] = None,
    github_event_name: Annotated[
        str | None,
        typer.Option(envvar="GITHUB_EVENT_NAME", help="The event's name (with --github-event)."),
    ] = None,
    post: Annotated[
        bool,
        typer.Option(
            "--post/--no-post",
            help="With --github-event: post the commit status, check run and comment with "
            "$GITHUB_TOKEN.",
        ),
    ] = False,
    comment: Annotated[
        bool,
        typer.Option(
            "--comment/--no-comment", help="With --post: the sticky report comment on the PR."
        ),
    ] = True,
    status_context: Annotated[
        str,
        typer.Option(envvar="GATEKEEPER_STATUS_CONTEXT", help="With --post: the status name."),
    ] = "gatekeeper",
) -> None:
    """Merge HEAD into BASE in a scratch clone, run every check, decide, write the report."""
    if sandbox is not None and sandbox not in KINDS:
        fail(f"unknown sandbox '{sandbox}': use --sandbox {' or --sandbox '.join(KINDS)}")
    if github_event is not None:
        if base is not None or head:
            fail("--base and --head come from the event with --github-event; drop them")
        code = _validate_github_event(
            StepOptions(
                event_path=github_event,
                event_name=github_event_name or "",
                repo=repo,
                policy=policy,
                out=out or DEFAULT_OUT,
                post=post,
                comment=comment,
                context=status_context,
            ),
            as_json,
            sandbox,
        )
        raise typer.Exit(code)
    if post:
        fail("--post needs --github-event (the pull request to post on comes from the event)")
    if not head:
        fail("missing option '--head' (or give --github-event)")
    if len(set(head)) < len(head):
        fail("the same --head is given twice: a batch merges each branch once")
    base = base or "main"
    repo = repo.resolve()
    try:
        base_sha = resolve(repo, base)
        heads = [BatchMember(ref=ref, sha=resolve(repo, ref)) for ref in head]
    except GitError as exc:
        fail(str(exc))
    try:
        with policy_for(repo, base_sha, policy) as loaded:
            job = Job(
                repository=str(repo),
                base_ref=base,
                head_ref=heads[0].ref,
                base_sha=base_sha,
                head_sha=heads[0].sha,
                policy_source=loaded.source,
            )
            kind = kind_of(loaded, sandbox)
            if kind == "containers":
                require_engine()
            if len(heads) == 1:
                verdict = run_job(job, repo, loaded, sandbox=kind)
            else:
                verdict = _validate_batch(job, heads, repo, loaded, kind)
    except ConfigError as exc:
        fail(str(exc))
    emit(verdict, out, as_json)
    raise typer.Exit(verdict.exit_code)


def _validate_batch(
    job: Job, heads: list[BatchMember], repo: Path, loaded: LoadedPolicy, sandbox: str
) -> Verdict:
    """The heads merged in order, validated as one Job; a rejected batch is searched for the
    head that breaks it (bot.engine.batch), named first among the verdict's reasons."""
    from bot.engine.batch import Batch, settle

    def validate(one: Job, where: Path, kept: KeptBase) -> Verdict:
        return run_job(one, where, loaded, sandbox=sandbox, kept=kept)

    def searching() -> None:
        err.print("[yellow]the batch is rejected: looking for the head that breaks it[/]")

    with Batch(repo, job, heads) as batch:
        return settle(batch.chain, batch.job(), validate, searching)


def _validate_github_event(options: StepOptions, as_json: bool, sandbox: str | None) -> int:
    """The Actions step: the event decides what to validate (see bot.actions.run)."""
    from bot.actions.errors import ActionsError
    from bot.actions.run import run_step, take_token

    def validator(
        job: Job, repo: Path, loaded: LoadedPolicy, kept: KeptBase | None = None
    ) -> Verdict:
        kind = kind_of(loaded, sandbox)
        if kind == "containers":
            try:
                check_engine()
            except EngineUnavailable as exc:
                raise ActionsError(str(exc)) from None
        return run_job(job, repo, loaded, sandbox=kind, kept=kept)

    if not options.event_name:
        fail("--github-event needs the event's name: GITHUB_EVENT_NAME or --github-event-name")
    # Before anything runs the change's code: no child process may inherit the token.
    token = take_token(os.environ)
    if options.post and token is None:
        fail("--post needs the token in GITHUB_TOKEN (env GITHUB_TOKEN: ${{ github.token }})")
    env = dict(os.environ)
    client = _token_client(token, env) if token else None
    # The change's own text reaches the log (reasons, log tails): the runner must not read
    # workflow commands in it. Gatekeeper's annotations are written once commands resume.
    resume = secrets.token_hex(16)
    sys.stdout.write(f"::stop-commands::{resume}\n")
    sys.stdout.flush()
    commands = io.StringIO()
    result = run_step(
        options,
        validator,
        lookups=client,
        publisher_factory=_publisher_factory(client, options.context, env) if client else None,
        env=env,
        stdout=commands,
        log=lambda line: err.print(line, soft_wrap=True, markup=False, highlight=False),
    )
    if result.verdict is not None:
        emit(result.verdict, None, as_json)
    else:
        err.print(f"skipped: {result.reason}", soft_wrap=True, markup=False, highlight=False)
    err.print(f"decision: {result.decision}\nreport: {result.report_path}", markup=False)
    sys.stderr.flush()
    sys.stdout.write(f"::{resume}::\n")
    sys.stdout.write(commands.getvalue())
    sys.stdout.flush()
    return result.exit_code


def _token_client(token: str, env: dict[str, str]) -> GitHubClient:
    from bot.github.auth import DEFAULT_API_URL, TokenCredentials
    from bot.github.client import GitHubClient

    api_url = env.get("GITHUB_API_URL") or DEFAULT_API_URL
    return GitHubClient(api_url, TokenCredentials(token))


def _publisher_factory(
    client: GitHubClient, context: str, env: dict[str, str]
) -> Callable[[str, LoadedPolicy], Publisher]:
    """Publishers like the service's, linking to the Actions run instead of the service."""
    from bot.actions.outputs import run_url
    from bot.github.publish import Publisher

    def make(repository: str, loaded: LoadedPolicy) -> Publisher:
        report = loaded.policy.report
        return Publisher(
            client,
            repository,
            context=context,
            report_url=run_url(env),
            review=bool(report and report.review),
            labels=bool(report and report.labels),
        )

    return make


def require_engine() -> None:
    """The containers sandbox needs a running engine: say so at once, and how to start one."""
    try:
        check_engine()
    except EngineUnavailable as exc:
        fail(str(exc))


def run_job(
    job: Job,
    repo: Path,
    loaded: LoadedPolicy,
    sandbox: str | None = None,
    kept: KeptBase | None = None,
) -> Verdict:
    """Validate with the sandbox `sandbox` names (default: the policy's); `kept`: a batch's
    kept base (bot/engine/kept.py)."""
    with err.status(f"validating {job.head_ref} into {job.base_ref}") as status:
        return run_validation(
            job,
            repo,
            loaded,
            factory(sandbox),
            progress=lambda stage: status.update(f"{job.head_ref}: {stage}"),
            kept=kept,
        )


def emit(verdict: Verdict, out: Path | None, as_json: bool) -> None:
    color = {"approve": "green", "review": "yellow", "reject": "red", "error": "magenta"}
    err.print(f"[bold {color[verdict.decision]}]{verdict.summary}[/]", soft_wrap=True)
    for reason in verdict.reasons:
        err.print(f"  - {reason.splitlines()[0]}", soft_wrap=True)
    if out is not None:
        report, verdict_path = write_outputs(verdict, out)
        err.print(f"report: {report}\nverdict: {verdict_path}")
    if as_json:
        sys.stdout.write(verdict.model_dump_json(indent=2) + "\n")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the reports go.")] = Path("gatekeeper-demo"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    sandbox: Annotated[
        str,
        typer.Option(help="local (processes) or containers (the demo API's Dockerfile)."),
    ] = "local",
    target: Annotated[
        list[str] | None,
        typer.Option(help="Only this example target (repeatable): sessions-api, items-api."),
    ] = None,
) -> None:
    """Build the example repositories, validate every builder fix, compare with expectations."""
    if sandbox not in KINDS:
        fail(f"unknown sandbox '{sandbox}': use --sandbox {' or --sandbox '.join(KINDS)}")
    unknown = [name for name in target or () if name not in demo_module.TARGETS]
    if unknown:
        fail(f"unknown target '{unknown[0]}': use {' or '.join(demo_module.TARGETS)}")
    if sandbox == "containers":
        require_engine()
    code = demo_module.run(
        out.resolve(),
        as_json=as_json,
        console=err,
        sandbox=sandbox,
        targets=tuple(dict.fromkeys(target or demo_module.TARGETS)),
    )
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Validations run at once.")] = None,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Work the queue in-process (default) or leave it to "
            "`gatekeeper worker` processes.",
        ),
    ] = None,
) -> None:
    """Run the GitHub App: receive webhooks, validate builder PRs, report on them.

    Settings come from GATEKEEPER_* environment variables (see the README); the options
    override them."""
    from bot.app.server import serve as run_server

    _run_service(run_server, host=host, port=port, workers=workers, worker=worker)


@app.command()
def worker(
    workers: Annotated[int | None, typer.Option(help="Validations run at once.")] = None,
) -> None:
    """Work the queue of `gatekeeper serve` (same DATABASE_URL) until SIGTERM, then drain.

    Run as many as the machines allow: they share the queue, the per-repository
    concurrency and the shared-resource lines through PostgreSQL."""
    from bot.app.server import work

    if not os.environ.get("DATABASE_URL"):
        fail(
            "gatekeeper worker needs DATABASE_URL: the embedded database belongs to the one "
            "`gatekeeper serve` process that started it"
        )
    _run_service(work, workers=workers)


def _run_service(run: Callable[..., None], **options: Any) -> None:
    from pydantic import ValidationError

    from bot.app.settings import Settings
    from bot.github.auth import CredentialsError

    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = [
            f"GATEKEEPER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        fail("invalid settings:\n  " + "\n  ".join(problems))
    try:
        run(settings)
    except (CredentialsError, SandboxError) as exc:
        fail(str(exc))


@policy_app.command("check")
def policy_check(files: Annotated[list[Path], typer.Argument(help="Policy files.")]) -> None:
    """Validate policy files and the suites they name; exit 2 with file:line:col messages
    when one is wrong, so a broken suite is found here rather than by the first run."""
    problems = 0
    for path in files:
        try:
            loaded = load_policy(path)
            load_suites(loaded.suite_paths())
        except ConfigError as exc:
            problems += 1
            for line in exc.problems:
                # markup=False: messages quote the file (`? [a, b]`), not rich markup.
                err.print(line, style="red", markup=False, soft_wrap=True)
            continue
        err.print(f"[green]ok[/] {path}")
    if problems:
        raise typer.Exit(EXIT_ERROR)


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the policy's JSON Schema (for editors: yaml-language-server $schema)."""
    sys.stdout.write(json.dumps(Policy.model_json_schema(), indent=2) + "\n")


# -- gatekeeper runs: the service's run history -------------------------------------------

runs_app = typer.Typer(
    no_args_is_help=True, help="The run history of `gatekeeper serve` (from DATABASE_URL)."
)
app.add_typer(runs_app, name="runs")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="DATABASE_URL", show_envvar=True, help="The service's database."
    ),
]


def _history_store(database_url: str | None) -> Store:
    # The embedded server only runs inside `gatekeeper serve`; there is nothing to read
    # without a URL, and guessing one could read another installation's runs.
    if not database_url:
        fail("set DATABASE_URL (or --database-url) to the database `gatekeeper serve` uses")
    from bot.app.store import Store

    return Store(database_url)


@runs_app.command("list")
def runs_list(
    repo: Annotated[str | None, typer.Option(help="owner/name.")] = None,
    pr: Annotated[int | None, typer.Option(min=1, help="Pull request number.")] = None,
    decision: Annotated[
        Decision | None,
        typer.Option(help="error also matches runs that failed before a verdict."),
    ] = None,
    state: Annotated[history.RunState | None, typer.Option(help="The run's state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List recent runs, newest first."""
    import psycopg

    store = _history_store(database_url)
    try:
        page = history.list_runs(
            store,
            history.RunFilter(repo=repo, pr=pr, decision=decision, state=state),
            per_page=limit,
        )
    except psycopg.Error as exc:
        fail(f"cannot read the run history: {exc}")
    if as_json:
        rows = [history.jsonable(row) for row in page.items]
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"{len(page.items)} of {page.total} runs", title_justify="left")
    for column in ("run", "repository", "pr", "head", "state", "decision", "risk", "created"):
        table.add_column(column)
    table.add_column("took", justify="right")
    for row in page.items:
        table.add_row(
            str(row["id"]),
            row["repository"],
            str(row["pr_number"] or ""),
            (row["head_sha"] or "")[:12],
            row["state"],
            row["decision"] or "",
            row["risk"] or "",
            f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
            "" if row["seconds"] is None else f"{row['seconds']:.1f} s",
        )
    Console(highlight=False, width=None if sys.stdout.isatty() else 160).print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(metavar="ID", help="The run's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run and its verdict.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one run: its facts, then its Markdown report."""
    import psycopg

    store = _history_store(database_url)
    try:
        row = history.get_run(store, run_id)
    except psycopg.Error as exc:
        fail(f"cannot read the run history: {exc}")
    if row is None:
        fail(f"no run {run_id}")
    if as_json:
        sys.stdout.write(json.dumps(history.jsonable(row), indent=2, default=str) + "\n")
        return
    pr = f" #{row['pr_number']}" if row["pr_number"] else ""
    took = "" if row["seconds"] is None else f" in {row['seconds']:.1f} s"
    lines = [
        f"run {row['id']}: {row['repository']}{pr} @ {(row['head_sha'] or '?')[:12]}",
        f"state: {row['state']}{took}",
        f"decision: {row['decision'] or '-'}  risk: {row['risk'] or '-'}",
        f"created: {row['created_at']:%Y-%m-%d %H:%M:%S %Z}",
    ]
    if row["detail"]:
        lines.append(f"detail: {row['detail']}")
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.write(row["report"] or "(no report)\n")


EXIT_INTERRUPTED = 130  # typer turns KeyboardInterrupt into this exit code


def main() -> None:
    """Typer in standalone mode: usage errors print their message and exit 2; every command
    ends through typer.Exit with its code."""
    unwind_on_interrupts()
    try:
        app()
    except SystemExit as exit:
        if exit.code == EXIT_INTERRUPTED:
            err.print("[yellow]interrupted: the sandbox and scratch files were removed[/]")
        raise
    except Exception as exc:
        # A bug of ours: exit 1 (Python's default) would read as a reject.
        message = f"internal error: {type(exc).__name__}: {exc} (traceback in {_crash_log()})"
        _print_error(message)
        sys.exit(EXIT_ERROR)


def _crash_log() -> Path:
    """Keep the traceback of an internal error where a bug report can quote it."""
    handle, name = tempfile.mkstemp(prefix="gatekeeper-internal-error-", suffix=".log")
    with os.fdopen(handle, "w") as log:
        traceback.print_exc(file=log)
    return Path(name)
