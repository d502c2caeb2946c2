"""The `gatekeeper` command line: an edge that builds a Job and prints the Verdict.

Exit codes (one table for every entry point, see the README): 0 approve, 1 reject,
3 review, 2 error (including bad input: a malformed policy, an unknown ref). 130 when
interrupted, after cleaning up.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
from rich.console import Console

from bot import demo as demo_module
from bot.gitrepo import GitError, resolve
from bot.job import Job
from bot.pipeline import validate as run_validation
from bot.policy import LoadedPolicy, Policy, load_policy
from bot.policy.loader import policy_at
from bot.report import write_outputs
from bot.sandbox.local import for_policy, raise_keyboard_interrupt_on_sigterm
from bot.verdict import EXIT_CODES, Decision, Verdict
from bot.yamlfile import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
policy_app = typer.Typer(no_args_is_help=True, help="Check policies and print their schema.")
app.add_typer(policy_app, name="policy")
# Logs and CI capture stderr without a terminal; rich would then assume 80 columns.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)

EXIT_ERROR = EXIT_CODES[Decision.error]


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


@app.command()
def validate(
    repo: Annotated[Path, typer.Option(help="Path of the git repository.")] = Path("."),
    base: Annotated[str, typer.Option(help="Target branch or commit (e.g. main).")] = "main",
    head: Annotated[str, typer.Option(help="Builder branch or commit to validate.")] = ...,
    policy: Annotated[
        Path | None, typer.Option(help="Policy file (default: the base's .github/gatekeeper.yml)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for report.md and verdict.json.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict JSON on stdout.")
    ] = False,
    sandbox: Annotated[str, typer.Option(help="Sandbox: local (embedded processes).")] = "local",
) -> None:
    """Merge HEAD into BASE in a scratch clone, run every check, decide, write the report."""
    if sandbox != "local":
        fail(f"sandbox '{sandbox}' is not available in this version; use --sandbox local")
    repo = repo.resolve()
    try:
        base_sha, head_sha = resolve(repo, base), resolve(repo, head)
    except GitError as exc:
        fail(str(exc))
    try:
        with _policy(repo, base_sha, policy) as loaded:
            job = Job(
                repository=str(repo),
                base_ref=base,
                head_ref=head,
                base_sha=base_sha,
                head_sha=head_sha,
                policy_source=loaded.source,
            )
            verdict = run_job(job, repo, loaded)
    except ConfigError as exc:
        fail(str(exc))
    emit(verdict, out, as_json)
    raise typer.Exit(verdict.exit_code)


@contextmanager
def _policy(repo: Path, base_sha: str, explicit: Path | None) -> Iterator[LoadedPolicy]:
    """--policy wins; otherwise the base commit's own policy, else the default."""
    if explicit is not None:
        yield load_policy(explicit)
    else:
        with policy_at(repo, base_sha) as loaded:
            yield loaded


def run_job(job: Job, repo: Path, loaded: LoadedPolicy) -> Verdict:
    with err.status(f"validating {job.head_ref} into {job.base_ref}") as status:
        return run_validation(
            job,
            repo,
            loaded,
            for_policy,
            progress=lambda stage: status.update(f"{job.head_ref}: {stage}"),
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
) -> None:
    """Build the demo repository, validate every builder fix, and compare with expectations."""
    code = demo_module.run(out.resolve(), as_json=as_json, console=err)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Validations run at once.")] = None,
) -> None:
    """Run the GitHub App: receive webhooks, validate builder PRs, report on them.

    Settings come from GATEKEEPER_* environment variables (see the README); the options
    override them."""
    from pydantic import ValidationError

    from bot.github.auth import CredentialsError
    from bot.server import serve as run_server
    from bot.settings import Settings

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = [
            f"GATEKEEPER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        fail("invalid settings:\n  " + "\n  ".join(problems))
    try:
        run_server(settings)
    except CredentialsError as exc:
        fail(str(exc))


@policy_app.command("check")
def policy_check(files: Annotated[list[Path], typer.Argument(help="Policy files.")]) -> None:
    """Validate policy files; exit 2 with file:line:col messages when one is wrong."""
    problems = 0
    for path in files:
        try:
            loaded = load_policy(path)
            loaded.suite_paths()
        except ConfigError as exc:
            problems += 1
            for line in exc.problems:
                err.print(f"[red]{line}[/]", soft_wrap=True)
            continue
        err.print(f"[green]ok[/] {path}")
    if problems:
        raise typer.Exit(EXIT_ERROR)


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the policy's JSON Schema (for editors: yaml-language-server $schema)."""
    sys.stdout.write(json.dumps(Policy.model_json_schema(), indent=2) + "\n")


EXIT_INTERRUPTED = 130  # typer turns KeyboardInterrupt into this exit code


def main() -> None:
    raise_keyboard_interrupt_on_sigterm()
    try:
        code = app(standalone_mode=False)
    except click.ClickException as exc:  # usage errors: exit 2 with click's message
        exc.show()
        sys.exit(exc.exit_code)
    if code == EXIT_INTERRUPTED:
        err.print("[yellow]interrupted: the sandbox and scratch files were removed[/]")
    sys.exit(code if isinstance(code, int) else 0)
