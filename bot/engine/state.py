"""What a run knows and records, shared by its stages: the Job and policy, the criteria,
stages and evidence so far, and the exceptions that end a run early.

The run itself is bot/engine/pipeline.py; each group of stages is a module of its own
(building, baseline, migration, replaying, checks), all working on this state.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from bot.checking import RunContext, StepResult, SuiteResult
from bot.checking.auth import Credentials
from bot.engine.job import Job
from bot.engine.kept import KeptBase
from bot.gitrepo import Scratch
from bot.judging.decision import is_required
from bot.judging.risk import Observed
from bot.judging.verdict import Criterion, Finding, Stage, Status
from bot.observing.locks import ObservedLock
from bot.policy import LoadedPolicy, api_env
from bot.sandbox import Sandbox, confine, environment
from bot.sandbox.base import BuildFailed, url_for

Progress = Callable[[str], None]
SandboxFactory = Callable[[LoadedPolicy], Sandbox]

LOG_TAIL_LINES = 60
_MISSING_EXTENSION = re.compile(
    r'extension "([^"]+)" is not available'
    r'|could not open extension control file "[^"]*/([^/"]+)\.control"'
)


class Infrastructure(Exception):
    """The gate could not do its job; the change is not to blame. Ends in decision 'error'."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class Aborted(Exception):
    """The change failed a step that later steps depend on; the verdict is decided already."""


class Cancelled(Exception):
    """Raised by a `progress` callback to stop the run at the next stage: the caller no
    longer wants its verdict (a newer commit, a deadline, a shutdown). `validate` lets it
    through, after the sandbox is torn down."""


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class RunState:
    """The state of one run; its stages are the subclasses' methods."""

    def __init__(
        self,
        job: Job,
        repo: Path,
        loaded: LoadedPolicy,
        sandbox_factory: SandboxFactory,
        progress: Progress,
        environ: Mapping[str, str],
        cancelled: Callable[[], bool],
        kept: KeptBase | None = None,
    ):
        self.job, self.repo, self.loaded = job, repo, loaded
        self.kept = kept
        # The base a run of the same batch kept, restored instead of made again.
        self.restoring = kept.for_base(job.base_sha) if kept is not None else None
        self.cancelled = cancelled
        self.sandbox: Sandbox | None = None
        self.preempted: str | None = None  # "cancelled" or "deadline", once the watch acted
        self.policy = loaded.policy
        self.sandbox_factory = sandbox_factory
        self.progress = progress
        self.environ = environ
        self.criteria: list[Criterion] = []
        self.stages: list[Stage] = []
        self.evidence: dict[str, Any] = {}
        self.findings: list[Finding] = []
        self.observed = Observed()
        self.suite_results: list[SuiteResult] = []
        self.baseline: dict[str, StepResult] = {}
        self.added_lines: dict[str, set[int]] = {}
        self.locks: list[ObservedLock] = []
        self.scratch: Scratch | None = None
        self.child_env: dict[str, str] = {}  # what the change's commands get (environment.py)
        self.variables: dict[str, str] = {}  # passed by the operator (GATEKEEPER_PASS_ENV)
        # The populated copy, once the change migrated it: the way back is tried there.
        self.populated: str | None = None
        self.confinement = confine.NOT_ISOLATED
        # The build commands running now, in either build thread (shell.stop).
        self.building: set[subprocess.Popen] = set()
        self.started = time.monotonic()
        self.deadline = self.started + self.policy.timeouts.run

    # Taken by `stage` only: stages end in several threads at once (the two builds).
    _stages_lock = threading.Lock()

    @contextmanager
    def stage(self, name: str, within: str | None = None) -> Iterator[None]:
        """Times `name` on the run's clock, as part of the stage `within` if it runs inside
        one (time cannot tell: a build that began later and ended sooner ran beside the
        other, not inside it). Safe to enter from several threads at once: each call keeps
        its own start and end, so stages that ran side by side are recorded as they ran and
        the report can name the one the run waited on (judging/timeline.py)."""
        self.progress(name)
        start = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            seconds, started = time.monotonic() - start, start - self.started
            with self._stages_lock:
                self.stages.append(
                    Stage(name=name, seconds=seconds, ok=ok, started=started, within=within)
                )
        if time.monotonic() > self.deadline:
            raise Infrastructure(
                f"the run exceeded timeouts.run ({self.policy.timeouts.run:.0f} s) after '{name}'"
            )

    def criterion(
        self, cid: str, title: str, passed: bool | None, evidence: str, *, gate: bool = False
    ) -> None:
        """Record one of the gate's own criteria. A `gate` criterion is one the later steps
        depend on: its failure leaves them unrun, so it rejects whatever `decision.required`
        says (a policy requiring only `api/*` must not approve a change that does not build)."""
        status = Status.skipped if passed is None else Status.passed if passed else Status.failed
        self.criteria.append(
            Criterion(
                id=cid,
                title=title,
                status=status,
                required=gate or is_required(cid, True, self.policy.decision),
                evidence=evidence,
            )
        )

    def _skip_all(self, suites, why: str) -> None:
        for suite in suites:
            for step in suite.steps:
                cid = f"{suite.id}/{step.id}"
                self.criteria.append(
                    Criterion(
                        id=cid,
                        title=step.title or cid,
                        status=Status.skipped,
                        required=is_required(cid, step.required, self.policy.decision),
                        evidence=why,
                        suite=suite.id,
                        bug_id=suite.bug_id,
                    )
                )

    def _context(self, sandbox: Sandbox, headers: Credentials, marks: dict[str, int]):
        return RunContext(
            api_url=sandbox.api_url or "",
            database_url=sandbox.database_url,
            logs=sandbox,
            credentials=headers,
            step_timeout=self.policy.timeouts.step,
            api_start_marks=marks,
            variables={"run_id": self.job.head_sha[:8]},
        )

    def _image_failed(self, exc: BuildFailed, suites) -> NoReturn:
        """The merge result's image does not build: the change's fault, so a reject, with the
        build log's tail as the evidence (the base's image failing is an error elsewhere)."""
        self.criterion(
            "build.image",
            "the merge result's API image builds",
            False,
            f"{exc}\n{tail(exc.log_tail, 25)}".strip(),
            gate=True,
        )
        self._skip_all(suites, "not run: the API image did not build")
        raise Aborted from None

    def _raise_missing_extension(self, exc: Exception) -> None:
        text = f"{exc}\n{getattr(exc, 'log_tail', '')}"
        match = _MISSING_EXTENSION.search(text)
        if match:
            name = match.group(1) or match.group(2)
            raise Infrastructure(
                extension_message([name], self.policy.database.binaries),
                getattr(exc, "log_tail", ""),
            ) from None

    def _copy_environment(self, sandbox: Sandbox, database: str) -> dict[str, str]:
        """The run's environment with the database `database` (DB_*, api.env and the URL)."""
        app_url = url_for(sandbox.app_database_url, database)
        parts = environment.database(app_url)
        url_env = self.policy.api.database_url_env if self.policy.api else "DATABASE_URL"
        return {
            **self.child_env,
            **parts,
            **api_env(self.loaded, {**self.variables, **parts}),
            url_env: app_url,
        }


def extension_message(names: list[str], binaries: str) -> str:
    listed = ", ".join(f"'{n}'" for n in names)
    return (
        f"the migrations need the extension(s) {listed}, which the PostgreSQL in use "
        f"(database.binaries: {binaries}) does not ship. This is not the change's fault. "
        "Set `database.binaries: system` in the policy (with the distribution's "
        "postgresql package installed, e.g. `apt-get install postgresql-15`) or point it "
        "at a PostgreSQL bin directory that has them."
    )
