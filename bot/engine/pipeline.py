"""The validation pipeline: one Job in, one Verdict out. Every entry point calls `validate`.

Order matters and mirrors what a careful maintainer does by hand: merge, build, establish
the base branch's schema, apply the change's migrations (twice), compare schemas, drive the
API, re-check earlier fixes, then rate and decide. Who is at fault decides the outcome: a
failure of the change is a reject, a failure of the gate's own machinery is an error, and
nothing that did not run can count as passed.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import psycopg
from psycopg.sql import SQL, Identifier

from bot.checking import RunContext, StepResult, SuiteResult, load_suites, run_suite
from bot.checking.auth import Credentials
from bot.engine.job import Job
from bot.engine.kept import BaseRecord, KeptBase
from bot.gitrepo import Scratch
from bot.judging import rollback
from bot.judging.decision import decide, is_required, root_cause
from bot.judging.lint import LintOptions, lint_sql
from bot.judging.lint.model import table_key
from bot.judging.risk import Measured, Observed, assess, predict_seconds
from bot.judging.verdict import Criterion, Decision, Finding, Risk, Stage, Status, Verdict
from bot.migrating import replay
from bot.migrating.migrations import MigrationFailed, Migrator, TwoHeads
from bot.observing import ddl, schema, sqllog
from bot.observing.locks import LockMonitor, ObservedLock, lock_strength
from bot.policy import LoadedPolicy, api_env, duration_seconds
from bot.policy.yamlfile import ConfigError
from bot.reporting import masking
from bot.sandbox import ApiSpec, ApiStartError, Sandbox, SandboxError, confine, environment, shell
from bot.sandbox.base import BuildFailed, url_for
from bot.sandbox.buildcache import BuildCache
from bot.sandbox.postgres import APP_ROLE

Progress = Callable[[str], None]
SandboxFactory = Callable[[LoadedPolicy], Sandbox]

_MISSING_EXTENSION = re.compile(
    r'extension "([^"]+)" is not available'
    r'|could not open extension control file "[^"]*/([^/"]+)\.control"'
)
LOG_TAIL_LINES = 60
_WATCH_INTERVAL = 0.5  # seconds between looks at the deadline and at `cancelled`


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


def validate(
    job: Job,
    repo: Path,
    loaded: LoadedPolicy,
    sandbox_factory: SandboxFactory,
    progress: Progress = lambda _msg: None,
    environ: Mapping[str, str] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    secrets: Iterable[str] = (),
    kept: KeptBase | None = None,
) -> Verdict:
    """Validate `job` in `repo` under `loaded`. Raises only KeyboardInterrupt and the
    `Cancelled` its own `progress` callback raised: every failure is a verdict.

    The verdict is masked: no secret of `environ` (see bot/reporting/masking.py), nor any of
    `secrets` the caller holds elsewhere, is in it, whatever the change printed, so nothing
    derived from it (report, statuses, comments) can leak one.

    `cancelled` is polled while a stage runs: once it says so (a newer commit, the watchdog,
    a worker shutting down), or once `timeouts.run` is over, the stage is pre-empted — the
    change's processes killed, its database sessions ended — and the run raises `Cancelled`
    or ends in `error`, however far the stage had got.

    `kept` (the runs of one batch share one): the first run keeps its migrated base there,
    and a later run of the same base restores it instead of building, migrating, seeding and
    checking the base again (bot/engine/kept.py)."""
    environ = os.environ if environ is None else environ
    run = _Run(job, repo, loaded, sandbox_factory, progress, environ, cancelled, kept)
    return masking.from_environment(environ, secrets).model(run.execute())


class _Run:
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
        self.started = time.monotonic()
        self.deadline = self.started + self.policy.timeouts.run

    # -- bookkeeping -------------------------------------------------------------------------

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

    # -- the run -----------------------------------------------------------------------------

    def execute(self) -> Verdict:
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        error: Infrastructure | None = None
        try:
            suites = load_suites(self.loaded.suite_paths())
            # The policy reads only what the operator passes (GATEKEEPER_PASS_ENV).
            variables = environment.passed(self.environ)
            # A login's ${NAME}: the passed variables and api.env (its database parts empty).
            headers = Credentials(
                self.policy.auth,
                self.loaded.source,
                {**variables, **api_env(self.loaded, {**variables, **environment.database("")})},
            )
            # Checked now, so a wrong name fails before anything runs; expanded for real
            # once the sandbox's database exists (${DB_HOST} …).
            api_env(self.loaded, {**variables, **environment.database("")})
            self.variables = variables
            confine.sweep()
            with (
                Scratch(self.repo) as scratch,
                confine.prepare(scratch.root) as self.confinement,
                self._watch(),
            ):
                self.evidence["isolation"] = self.confinement.note
                self._in_scratch(scratch, suites, headers)
        except Aborted:
            pass
        except Cancelled:
            raise
        except ConfigError as exc:
            error = Infrastructure(f"configuration: {exc}")
        except environment.PassError as exc:
            error = Infrastructure(f"configuration: {exc}")
        except Infrastructure as exc:
            error = exc
        except SandboxError as exc:
            error = Infrastructure(str(exc), exc.log_tail)
        except Exception as exc:  # a bug in the gate must never turn into an approve
            error = Infrastructure(f"internal error: {type(exc).__name__}: {exc}")
        # Whatever the pre-empted stage made of its killed processes is not the change's doing.
        if self.preempted == "cancelled":
            raise Cancelled
        if self.preempted == "deadline":
            error = Infrastructure(
                f"the run exceeded timeouts.run ({self.policy.timeouts.run:.0f} s): the "
                "change's processes were stopped and its database sessions ended"
            )
        return self._verdict(started_at, error)

    @contextmanager
    def _watch(self) -> Iterator[None]:
        """A thread that pre-empts the running stage at the deadline or on `cancelled`."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(_WATCH_INTERVAL):
                if time.monotonic() > self.deadline:
                    self.preempted = "deadline"
                elif _asks_to_stop(self.cancelled):
                    self.preempted = "cancelled"
                else:
                    continue
                self.confinement.kill_all()
                if self.sandbox is not None:
                    _terminate_sessions(self.sandbox)
                return

        watcher = threading.Thread(target=watch, name="gatekeeper-watch", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def _in_scratch(self, scratch: Scratch, suites: list, headers: Credentials) -> None:
        job = self.job
        self.scratch = scratch
        with self.stage("merge"):
            merge = scratch.merge(job.base_sha, job.head_sha)
            self.evidence["commits"] = [
                c.__dict__ for c in scratch.commits(job.base_sha, job.head_sha)
            ]
            if not merge.ok:
                self.criterion(
                    "merge",
                    f"{job.head_ref} merges cleanly into {job.base_ref}",
                    False,
                    f"merge conflict in {len(merge.conflicts)} file(s): "
                    + ", ".join(merge.conflicts),
                    gate=True,
                )
                self.evidence["merge"] = {"conflicts": merge.conflicts}
                self._skip_all(suites, "not run: the branch does not merge")
                raise Aborted
            self.job = job = job.model_copy(update={"merge_sha": merge.sha})
            self.criterion(
                "merge",
                f"{job.head_ref} merges cleanly into {job.base_ref}",
                True,
                f"merge commit {merge.sha[:12]} of {job.head_sha[:12]} into {job.base_sha[:12]}",
                gate=True,
            )
            changed = scratch.changed_files(job.base_sha, merge.sha)
            self.added_lines = scratch.added_lines(job.base_sha, merge.sha)
            self.evidence["changed_files"] = [f.__dict__ for f in changed]
            self.observed.files_changed = len(changed)
            self.observed.lines_changed = sum((f.added or 0) + (f.deleted or 0) for f in changed)
            base_dir = scratch.checkout(job.base_sha, "base")
            head_dir = scratch.checkout(merge.sha, "merge")
            self.confinement.give(base_dir, head_dir, *scratch.private_dirs())

        with ExitStack() as stack:
            with self.stage("sandbox"):
                sandbox = self.sandbox = self.sandbox_factory(self.loaded)
                if sandbox.supports_netns:
                    sandbox.netns = self.confinement.netns
                stack.enter_context(sandbox)
                self.evidence["isolation"] += sandbox.network_note
                env = self._environment(sandbox, scratch)
            with self.stage("build"):
                self._build_both(base_dir, head_dir, suites)
            self._in_sandbox(sandbox, base_dir, head_dir, suites, headers, env, changed)

    def _environment(self, sandbox: Sandbox, scratch: Scratch) -> dict[str, str]:
        """What the change's build, migration, seed and API commands all get: the scratch
        HOME and TMPDIR, the database in parts (${DB_HOST} …) and the policy's api.env
        expanded with them. Returns the API's own variables (the containers sandbox passes
        them into its container)."""
        database = environment.database(sandbox.app_database_url)
        env = {**database, **api_env(self.loaded, {**self.variables, **database})}
        self.child_env = {**environment.base(*scratch.private_dirs()), **env}
        return env

    # -- inside the sandbox ------------------------------------------------------------------

    def _in_sandbox(self, sandbox, base_dir, head_dir, suites, headers, env, changed) -> None:
        policy = self.policy
        conn = psycopg.connect(sandbox.database_url, autocommit=True)
        migrator: Migrator | None = None
        try:
            self._prepare_database(sandbox, conn)
            confine = self._confine(sandbox)
            spec = self._api_spec(env, confine)
            migrator = Migrator(policy, sandbox, spec, self.child_env, self.deadline, confine)

            base_log = self._restore_base(sandbox, migrator, base_dir)
            if base_log is None:
                base_log = self._base(sandbox, migrator, base_dir, suites, headers)
            base_mark = ddl.mark(conn)
            before = schema.snapshot(conn)
            stats_before = schema.table_stats(conn)

            replay_db = self._replay_database(sandbox, migrator)
            if replay_db:
                with self.stage("clone base"):
                    # A template must have no session: the gate's own close first.
                    conn.close()
                    migrator.close()
                    sandbox.close_connection()
                    replay.clone(sandbox.database_url, policy.database.name, replay_db, APP_ROLE)
                    conn = psycopg.connect(sandbox.database_url, autocommit=True)

            with self.stage("migrate"):
                db_mark = sandbox.log_mark("database")
                # Watches pg_locks from the side while the change migrates: what the
                # statements really locked, not what the text suggests.
                with LockMonitor(sandbox.database_url, ignore_pids={conn.info.backend_pid}) as seen:
                    applied = self._apply(migrator, head_dir, changed, suites)
                self.locks = seen.observed()
                head_log = sandbox.logs("database", db_mark)
                # The statement log served the migration; the checks do not need it.
                conn.execute(
                    f'ALTER DATABASE "{policy.database.name}" RESET log_min_duration_statement'
                )
                head_mark = ddl.mark(conn)
                after = schema.snapshot(conn)
                stats_after = schema.table_stats(conn)

            # The checks run on the first deployment, before the re-apply: a migration that
            # breaks on the second start-up still gets its behaviour on record.
            with self.stage("checks"):
                self._checks(sandbox, migrator, head_dir, suites, headers)

            with self.stage("re-apply"):
                reapply_mark = sandbox.log_mark("database")
                again = self._reapply(migrator, head_dir, conn, after)
                self._database_errors(head_log + sandbox.logs("database", reapply_mark))

            # The models are compared with the first database while the replay migrates its
            # copy: two processes of the change on two databases, side by side.
            with ThreadPoolExecutor(1, thread_name_prefix="gatekeeper-models") as beside:
                models = (
                    beside.submit(self._compare_models, migrator, head_dir)
                    if policy.migrations.versioned and policy.migrations.check_models
                    else None
                )
                self._record_migration(
                    conn,
                    base_mark,
                    head_mark,
                    before,
                    after,
                    stats_before,
                    stats_after,
                    applied,
                    again,
                )
                self._lint(migrator, head_dir, changed, before, base_log, head_log)
                if replay_db:
                    with self.stage("populated replay"):
                        self._replay(
                            sandbox,
                            migrator,
                            head_dir,
                            replay_db,
                            before,
                            after,
                            base_log,
                            head_log,
                        )
                if models is not None:
                    self._record_models(*models.result())
            with self._way_back(sandbox, conn) as (back, environ):
                if policy.migrations.versioned:
                    self._check_downgrade(migrator, head_dir, back, environ, before)
                with self.stage("rollback"):
                    self._check_rollback(back, before)
        finally:
            conn.close()
            if migrator is not None:
                migrator.close()
            sandbox.stop_api()
            self.evidence["logs"] = {
                "api": tail(sandbox.logs("api")),
                "database": tail(sandbox.logs("database"), 30),
            }

    def _base(self, sandbox, migrator: Migrator, base_dir: Path, suites, headers) -> str:
        """The base migrated, seeded and checked; its database's statement log meanwhile.
        Kept for the batch's later runs when the caller keeps one (`kept`)."""
        started = time.monotonic()
        with self.stage("base schema"):
            base_log_mark = sandbox.log_mark("database")
            try:
                migrator.establish_base(base_dir)
            except (MigrationFailed, ApiStartError) as exc:
                self._base_failed(exc)
            base_log = sandbox.logs("database", base_log_mark)

        if self.policy.seed.commands or self.policy.seed.sql:
            with self.stage("seed"):
                try:
                    migrator.seed(base_dir)
                except MigrationFailed as exc:
                    raise Infrastructure(
                        f"the seed failed on the base branch: {exc}; no baseline to "
                        "compare against",
                        exc.log_tail,
                    ) from None

        with self.stage("base checks"):
            self._baseline(sandbox, migrator, base_dir, suites, headers)
            sandbox.stop_api()
        path = self.kept.dump_path() if self.kept is not None else None
        if path is not None:
            with self.stage("keep base"):
                self._keep_base(sandbox, path, base_log, time.monotonic() - started)
        return base_log

    def _keep_base(self, sandbox: Sandbox, path: Path, base_log: str, seconds: float) -> None:
        """Dumps the base for the batch's later runs, before any of the change's code has run
        here; a base that cannot be dumped is not kept (each later run makes its own)."""
        assert self.kept is not None
        builds = [b for b in self.evidence.get("build", []) if b.get("label") == "base"]
        seconds += sum(b["seconds"] for b in builds)
        try:
            sandbox.dump_database(path, ddl.SCHEMA)
        except SandboxError as exc:
            self.evidence["base_kept"] = {
                "restored": False,
                "note": f"The base was not kept for the next runs: {_said(exc)}",
            }
            return
        self.kept.record = BaseRecord(
            base_sha=self.job.base_sha,
            dump=path,
            base_log=base_log,
            baseline=dict(self.baseline),
            evidence={k: self.evidence[k] for k in ("baseline_error",) if k in self.evidence},
            made_by=self.job.head_ref,
            seconds=round(seconds, 2),
        )

    def _restore_base(self, sandbox: Sandbox, migrator: Migrator, base_dir: Path) -> str | None:
        """The base an earlier run of the batch kept, restored into this run's database; its
        statement log. None when there is none, or it did not restore: the base is then
        built and made here like any run's (the restore is one transaction: nothing of it
        stays)."""
        record = self.restoring
        if record is None or self.kept is None:
            return None
        try:
            with self.stage("restore base"):
                sandbox.restore_database(record.dump, APP_ROLE)
        except SandboxError as exc:
            self.evidence["base_kept"] = {
                "restored": False,
                "note": f"The kept base did not restore ({_said(exc)}): the base was built and "
                "migrated again",
            }
            self.restoring = self.kept.record = None  # this run keeps a new one
            with self.stage("build base"):
                self._base_built(self._build(base_dir, "base", BuildCache(self.policy.build)))
            return None
        try:
            migrator.read_base(base_dir)
        except MigrationFailed as exc:
            self._base_failed(exc)
        self.baseline = dict(record.baseline)
        self.evidence.update(record.evidence)
        self.evidence["base_kept"] = {
            "restored": True,
            "from": record.made_by,
            "note": f"The base was restored from the run of {record.made_by}, which built, "
            f"migrated, seeded and checked it ({record.seconds:.1f} s)",
        }
        return record.base_log

    def _base_failed(self, exc: MigrationFailed | ApiStartError) -> NoReturn:
        self._raise_missing_extension(exc)
        raise Infrastructure(
            f"the base branch's migrations do not apply: {exc}; no baseline to compare against",
            getattr(exc, "log_tail", ""),
        ) from None

    def _prepare_database(self, sandbox: Sandbox, conn: psycopg.Connection) -> None:
        timeouts = self.policy.timeouts
        name = self.policy.database.name
        # On the change's role, before any of its connections opens: every session it starts
        # (migration command, API, directory migrations) begins with them.
        for setting, value in (
            ("lock_timeout", timeouts.lock_timeout),
            ("statement_timeout", timeouts.statement_timeout),
        ):
            ms = int(duration_seconds(value) * 1000)
            conn.execute(
                SQL("ALTER ROLE {} SET {} = {}").format(
                    Identifier(APP_ROLE), Identifier(setting), ms
                )
            )
        # Every statement with its duration: sqllog finds the SQL the change introduced,
        # wherever the API keeps it, and how long each statement took.
        conn.execute(f'ALTER DATABASE "{name}" SET log_min_duration_statement = 0')
        ddl.install(conn)
        wanted = set(self.policy.database.extensions)
        missing = wanted - sandbox.available_extensions()
        if missing:
            raise Infrastructure(_extension_message(sorted(missing), self.policy.database.binaries))
        # Created here, by the gate: the change's role is no superuser, and many extensions
        # need one. Its own CREATE EXTENSION IF NOT EXISTS then finds them in place.
        for extension in sorted(wanted):
            conn.execute(SQL("CREATE EXTENSION IF NOT EXISTS {}").format(Identifier(extension)))

    def _raise_missing_extension(self, exc: Exception) -> None:
        text = f"{exc}\n{getattr(exc, 'log_tail', '')}"
        match = _MISSING_EXTENSION.search(text)
        if match:
            name = match.group(1) or match.group(2)
            raise Infrastructure(
                _extension_message([name], self.policy.database.binaries),
                getattr(exc, "log_tail", ""),
            ) from None

    def _confine(self, sandbox: Sandbox) -> tuple[str, ...]:
        """How the change's API and migration commands start: in the network namespace the
        sandbox gives (where its database listens, and nothing beyond), else on the host's."""
        if sandbox.netns is None:
            return self.confinement.networked
        return ("nsenter", f"--net={sandbox.netns}", *self.confinement.networked)

    def _api_spec(self, env: dict[str, str], confine: tuple[str, ...]) -> ApiSpec | None:
        api = self.policy.api
        if api is None:
            return None
        return ApiSpec(
            command=api.command,
            env=env,
            process_env=self.child_env,
            confine=confine,
            port_env=api.port_env,
            database_url_env=api.database_url_env,
            health_path=api.health_path,
            start_timeout=api.start_timeout,
        )

    def _apply(self, migrator: Migrator, head_dir: Path, changed, suites) -> list[str]:
        try:
            applied = migrator.apply_head(head_dir)
        except BuildFailed as exc:
            self._image_failed(exc, suites)
        except TwoHeads as exc:
            self.criterion("migrate.heads", "one head after the merge", False, str(exc), gate=True)
            self._skip_all(suites, "not run: the revision graph has two heads")
            raise Aborted from None
        except (MigrationFailed, ApiStartError) as exc:
            self._raise_missing_extension(exc)
            self.criterion(
                "migrate.apply",
                "the change's migrations apply on the base schema",
                False,
                f"{exc}\n{tail(getattr(exc, 'log_tail', ''), 25)}".strip(),
                gate=True,
            )
            self.criterion(
                "migrate.idempotent",
                "a second application changes nothing",
                None,
                "not run: the first application failed",
            )
            self._skip_all(suites, "not run: the migrations did not apply")
            raise Aborted from None
        self.observed.edited_migrations = migrator.edited
        if self.policy.migrations.versioned:
            self.criterion(
                "migrate.heads",
                "one head after the merge",
                True,
                "one head: the revisions form a single line from the base's head",
            )
        what = ", ".join(applied) if applied else _NOTHING_NEW[self.policy.migrations.mode]
        self.criterion(
            "migrate.apply",
            "the change's migrations apply on the base schema",
            True,
            f"applied {what}",
            gate=True,
        )
        return applied

    def _reapply(self, migrator, head_dir, conn, after) -> schema.SchemaDiff | None:
        if not self.policy.migrations.reapply:
            return None
        try:
            migrator.reapply(head_dir)
        except (MigrationFailed, ApiStartError) as exc:
            self.observed.reapply_failed = True
            self.criterion(
                "migrate.idempotent",
                "a second application changes nothing",
                False,
                f"the second application failed: {exc}\n"
                f"{tail(getattr(exc, 'log_tail', ''), 25)}".strip(),
            )
            return None
        again = schema.diff(after, schema.snapshot(conn))
        self.observed.reapply_failed = not again.is_empty
        self.criterion(
            "migrate.idempotent",
            "a second application changes nothing",
            again.is_empty,
            "applied again: no error, schema unchanged"
            if again.is_empty
            else "applied again and the schema changed:\n" + "\n".join(again.lines()),
        )
        return again

    def _check_downgrade(self, migrator, head_dir, conn, environ, before) -> None:
        """A versioned tool's promise beside its models (compared earlier): the change's
        revisions come down to the base's schema and go back up (on `conn`'s database, which
        `environ` names: the populated copy where there is one)."""
        settings = self.policy.migrations
        if settings.downgrade == "skip":
            return
        with self.stage("down and up"):
            problem = self._down_and_up(migrator, head_dir, conn, environ, before)
        required = settings.downgrade == "required"
        self.criteria.append(
            Criterion(
                id="migrate.downgrade",
                title="the change's revisions downgrade to the base schema and upgrade again",
                status=Status.failed if problem else Status.passed,
                required=required and is_required("migrate.downgrade", True, self.policy.decision),
                evidence=(
                    problem
                    or "downgraded to the base's head (schema equal to the "
                    "base's), upgraded again (schema equal to the first upgrade's)"
                )
                + (f" — on {self.evidence['way_back_on']}" if self.populated else ""),
            )
        )
        if problem and not required:
            self.findings.append(
                Finding(
                    rule="downgrade-fails",
                    level=Risk.high,
                    message=f"the change cannot be rolled back with its own downgrade: {problem}",
                )
            )
            self.observed.findings = self.findings

    def _replay_database(self, sandbox: Sandbox, migrator: Migrator) -> str | None:
        """The replay's database name, or None (with the reason on record) when none runs."""
        if self.policy.replay.rows == 0:
            self.evidence["replay"] = {"skipped": "replay.rows is 0"}
            return None
        return f"{self.policy.database.name}_replay"

    def _replay(
        self, sandbox, migrator, head_dir, database, before, after, base_log, head_log
    ) -> None:
        """The change once more on production-like rows (bot/migrating/replay.py)."""
        touched = _touched(before, after, head_log, self.observed.locked)
        timed = self._to_time(before, base_log, head_log)
        larger = f"{database}_10x"
        if timed:  # the larger sample's copy, taken while this one is still the base's
            replay.clone(sandbox.database_url, database, larger, APP_ROLE)
        rows = self.policy.replay.rows
        admin = url_for(sandbox.database_url, database)
        filled = replay.populate(admin, before, touched, rows, after)
        counts_before = replay.dml_counts(admin)
        self.evidence["replay"] = {
            "database": database,
            "rows": filled.rows,
            "not_filled": filled.skipped,
            "fill_seconds": round(filled.seconds, 3),
        }
        title = "the change's migrations apply on production-like rows"
        try:
            first = self._apply_on_copy(sandbox, migrator, head_dir, database)
        except MigrationFailed as exc:
            where = ", ".join(f"{t} ({n} rows)" for t, n in filled.rows.items())
            evidence = f"on generated rows in {where}: {exc}"
            if _ANY_ROW_FAILS.search(f"{exc}\n{exc.log_tail}"):
                # A NULL where NOT NULL is demanded fails on every row: production too.
                self.criterion("migrate.populated", title, False, evidence)
                return
            # Orphans, duplicates, values too long, failed casts depend on the values: the
            # generated ones are not production's. A maintainer should look, not be overruled.
            self.criterion("migrate.populated", title, None, evidence)
            self.criteria[-1].required = False
            self.findings.append(
                Finding(
                    rule="fails-on-rows",
                    level=Risk.high,
                    message=f"the change's migrations fail on generated rows: {exc}; check "
                    "that production's data cannot do the same",
                )
            )
            self.observed.findings = self.findings
            return
        with psycopg.connect(admin, autocommit=True) as copy:
            migrated = not schema.diff(before, schema.snapshot(copy)).is_empty
        if not migrated and not schema.diff(before, after).is_empty:
            # Its migrations read their database from somewhere else than DB_* and the URL
            # (a config file): the copy was never migrated, so the replay proves nothing.
            self.criterion(
                "migrate.populated",
                title,
                None,
                "not run: the migrations left the copy unchanged — they do not take their "
                "database from the URL or DB_* variables the run gives them",
            )
            self.criteria[-1].required = False
            return
        self.populated = database
        filled_text = ", ".join(f"{t} ({n} rows)" for t, n in filled.rows.items())
        self.criterion(
            "migrate.populated",
            title,
            True,
            f"applied on a copy of the base with generated rows in {filled_text}"
            if filled.rows
            else "applied on a copy of the base (no table it touches existed before)",
        )
        changes = _dml_changes(counts_before, replay.dml_counts(admin))
        self._unmatched_dml(base_log, head_log, filled.rows, changes)
        if timed:
            self._time_blocking(sandbox, migrator, head_dir, larger, before, after, first, timed)

    def _apply_on_copy(self, sandbox, migrator: Migrator, head_dir: Path, database: str) -> str:
        """The change's migrations on the copy `database`, as on the first database; returns
        the server's log of it, each statement with its duration."""
        admin = url_for(sandbox.database_url, database)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                SQL("ALTER DATABASE {} SET log_min_duration_statement = 0").format(
                    Identifier(database)
                )
            )
        environ = self._copy_environment(sandbox, database)
        mark = sandbox.log_mark("database")
        migrator.replay(
            head_dir,
            environ,
            url_for(sandbox.app_database_url, database),
            url_for(sandbox.gate_app_url, database),
        )
        return sqllog.of_database(sandbox.logs("database", mark), database)

    def _to_time(self, before: schema.Snapshot, base_log: str, head_log: str) -> dict[str, int]:
        """Declared tables (-> their rows) that the change's statements hold for a time that
        grows with their rows: a rewrite, a plain CREATE INDEX, a scan under lock. Brief
        catalog changes (a nullable column) are not timed."""
        held = {table_key(name): h for name, h in sqllog.held(head_log, base_log).items()}
        return {
            table: rows
            for table in before.tables
            if (table in self.observed.rewritten or _grows(held.get(table_key(table))))
            and (rows := _declared(self.policy.tables, table)) is not None
        }

    def _time_blocking(
        self, sandbox, migrator, head_dir, database, before, after, first, declared
    ) -> None:
        """How long each table of `declared` stays locked in production: the change's
        statements on it timed at two sample sizes (`first`: the replay's log, and once more
        on `database` with ten times the rows), the fixed cost taken out, the rest scaled to
        the declared rows. A larger sample that did not take visibly longer is noise (a cold
        cache, a busy machine): no measurement, and the rating keeps its rate or the
        linter's level."""
        small, large = self.policy.replay.rows, self.policy.replay.rows * 10
        admin = url_for(sandbox.database_url, database)
        replay.populate(admin, before, set(declared), large, after)
        try:
            second = self._apply_on_copy(sandbox, migrator, head_dir, database)
        except MigrationFailed:
            return  # it applied on the smaller sample: no timing, no claim
        small_held = {table_key(name): h for name, h in sqllog.held(first).items()}
        large_held = {table_key(name): h for name, h in sqllog.held(second).items()}
        for table, rows in sorted(declared.items()):
            t1, t2 = small_held.get(table_key(table)), large_held.get(table_key(table))
            if t1 is None or t2 is None:
                continue
            timed = f"{t1.ms:.0f} ms at {small:,} rows, {t2.ms:.0f} ms at {large:,} rows"
            predicted = predict_seconds((small, t1.ms), (large, t2.ms), rows)
            if predicted is None:
                self.evidence["replay"].setdefault("inconclusive_timing", {})[table] = timed
                continue
            rewritten = table in self.observed.rewritten
            self.observed.measured_blocking[table] = Measured(
                how=f"{timed} → ~{predicted:.1f} s at {rows:,} declared",
                seconds=predicted,
                lock="ACCESS EXCLUSIVE" if rewritten else t2.lock or t1.lock,
            )

    def _unmatched_dml(self, base_log: str, head_log: str, filled: dict[str, int], changes) -> None:
        """A backfill that updates or deletes nothing on rows it was written for: its WHERE
        matches nothing (the column's DEFAULT already filled it, a wrong condition)."""
        tables = {table_key(t): t for t in filled}
        for statement, written, verb in sqllog.dml(head_log, base_log):
            table = tables.get(table_key(written))
            if table is None or changes.get(table, {}).get(verb, 0) > 0:
                continue
            self.findings.append(
                Finding(
                    rule="dml-no-rows",
                    level=Risk.medium,
                    table=table,
                    statement=statement,
                    message=f"{verb} on {table} touched 0 of {filled[table]} production-like "
                    "rows: its WHERE clause matches nothing (did a DEFAULT already fill them?)",
                )
            )
        self.observed.findings = self.findings

    def _compare_models(self, migrator: Migrator, head_dir: Path) -> tuple[bool, str]:
        with self.stage("models"):
            return migrator.check_models(head_dir)

    def _record_models(self, ok: bool, differences: str) -> None:
        title = "the models match the migrated schema (alembic check)"
        if "invalid choice: 'check'" in differences:
            self.criterion(
                "migrate.models", title, None, "not run: `alembic check` needs Alembic 1.9+"
            )
            self.criteria[-1].required = False
            return
        if "does not provide a MetaData object" in differences:
            raise Infrastructure(
                "alembic check needs the models: the project's env.py gives no "
                "target_metadata (set it to the models' MetaData, or "
                "migrations.check_models: false)"
            )
        self.criterion(
            "migrate.models",
            title,
            ok,
            "no difference between the models and the schema"
            if ok
            else "the models differ from what the revisions create: "
            f"{shell.reason(differences)}\n{tail(differences, 15)}",
        )

    @contextmanager
    def _way_back(self, sandbox: Sandbox, conn: psycopg.Connection):
        """Where the way back is tried: the populated copy once the change migrated it (its
        rows are what a rollback meets in production), else the first database. Yields a
        connection to it and the environment naming it (None: the run's own)."""
        if self.populated is None:
            yield conn, None
            return
        self.evidence["way_back_on"] = "the populated copy"
        with psycopg.connect(
            url_for(sandbox.database_url, self.populated), autocommit=True
        ) as copy:
            yield copy, self._copy_environment(sandbox, self.populated)

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

    def _check_rollback(self, conn: psycopg.Connection, before: schema.Snapshot) -> None:
        """Apply the derived rollback (the run's last use of the database) and compare the
        schema it leaves with the base's: which steps work, which cannot, what remains."""
        steps = self.evidence.get("rollback") or []
        if not steps:
            return
        if self.sandbox is not None:
            self.sandbox.stop_api()  # its sessions would hold locks the rollback waits on
        results = rollback.check(conn, steps)
        remaining = schema.diff(before, schema.snapshot(conn))
        self.evidence["rollback_check"] = {
            "steps": results,
            "restores_base": remaining.is_empty,
            "remaining": remaining.lines()[:20],
        }

    def _down_and_up(self, migrator: Migrator, head_dir: Path, conn, environ, before) -> str:
        """'' when down and up work and land on the same schemas, else what went wrong."""
        after = schema.snapshot(conn)
        try:
            migrator.down_to_base(head_dir, environ)
        except MigrationFailed as exc:
            return f"the downgrade failed: {exc}"
        down = schema.diff(before, schema.snapshot(conn))
        if not down.is_empty:
            return "after the downgrade the schema differs from the base's:\n" + "\n".join(
                down.lines()[:10]
            )
        try:
            migrator.up_again(head_dir, environ)
        except MigrationFailed as exc:
            return f"the upgrade after the downgrade failed: {exc}"
        up = schema.diff(after, schema.snapshot(conn))
        if not up.is_empty:
            return "upgraded again, the schema differs from the first upgrade's:\n" + "\n".join(
                up.lines()[:10]
            )
        return ""

    def _database_errors(self, log: str) -> None:
        """Errors the server logged while the change's migrations ran (both applications)."""
        lines = [line for line in log.splitlines() if re.search(r"\b(ERROR|FATAL|PANIC):", line)]
        self.evidence["migration_errors"] = lines[:20]
        self.criterion(
            "migrate.errors",
            "the database logged no errors while migrating",
            not lines,
            "no ERROR lines in the database log"
            if not lines
            else f"{len(lines)} error line(s):\n" + "\n".join(lines[:5]),
        )

    def _record_migration(
        self, conn, base_mark, head_mark, before, after, stats_before, stats_after, applied, again
    ) -> None:
        events = ddl.read(conn, base_mark, head_mark)
        commands = ddl.summarise(events)
        existing = set(before.tables)
        diff = schema.diff(before, after)
        for command in commands:
            for table in command.rewritten:
                if table in existing and table not in self.observed.rewritten:
                    self.observed.rewritten.append(table)
        for event in events:
            if event.event != "ddl_command_end" or not event.object_identity:
                continue
            table = _table_of(event, existing)
            if table and event.command_tag in _LOCKING_TAGS:
                self.observed.locked.setdefault(table, []).append(event.command_tag)
        for lock in self.locks:
            if lock.table in existing and lock_strength(lock.mode) >= lock_strength("ShareLock"):
                self.observed.locked.setdefault(lock.table, []).append(
                    f"{lock.mode} held ≥{lock.held_for * 1000:.0f} ms"
                )
        self.evidence["locks"] = [
            {**lock.model_dump(mode="json"), "held_ms": round(lock.held_for * 1000, 1)}
            for lock in self.locks
            if lock.table in existing
        ]
        self.observed.dropped = diff.destructive()
        self._references(diff)
        # Declared production sizes win over the sandbox's (nearly empty) tables.
        rows = {name: s.rows for name, s in stats_before.items()}
        for name, size in self.policy.tables.items():
            matches = [t for t in rows if table_key(t) == table_key(name)] or [name]
            rows.update(dict.fromkeys(matches, size.rows))
        self.observed.table_rows = rows
        self.observed.blocking_budget = duration_seconds(self.policy.locks.max_blocking)
        self.observed.declared_rows = {n: size.rows for n, size in self.policy.tables.items()}
        self.evidence["migration"] = {
            "mode": self.policy.migrations.mode,
            "applied": applied,
            "commands": [c.model_dump(mode="json") for c in commands],
            "base_events": base_mark,
        }
        self.evidence["schema"] = {
            "diff": diff.lines(),
            "destructive": self.observed.dropped,
            "diff_data": diff.model_dump(mode="json"),
            "base_tables": len(before.tables),
            "head_tables": len(after.tables),
            "reapply_diff": again.lines() if again is not None else None,
        }
        self.evidence["rollback"] = rollback.plan(diff)
        self.evidence["tables"] = {
            name: {
                "rows_before": stats_before[name].rows if name in stats_before else None,
                "rows_after": stats.rows,
                "rewritten": name in stats_before
                and stats_before[name].relfilenode != stats.relfilenode,
            }
            for name, stats in stats_after.items()
        }

    def _references(self, diff: schema.SchemaDiff) -> None:
        """Code that still names a dropped table or column: it breaks once this is deployed.

        Lines of DDL (the migrations that created, altered or drop it, guards reading
        information_schema) are history, not readers, and do not count."""
        assert self.scratch is not None and self.job.merge_sha is not None
        for change in diff.changes:
            if not (change.destructive and change.kind in ("table", "column")):
                continue
            name = change.name.rsplit(".", 1)[-1].strip('"')
            found = [
                (path, line)
                for path, line, text in self.scratch.references(self.job.merge_sha, name)
                if not _DDL_LINE.search(text)
            ]
            # The application's readers first: a migration naming it is history, and a list
            # that opened with revision files would hide the code that breaks.
            found.sort(key=lambda hit: (_MIGRATION_PATH.search(hit[0]) is not None, hit))
            refs = [f"{path}:{line}" for path, line in found]
            if refs:
                self.observed.still_referenced[change.line()] = refs

    def _lint(self, migrator, head_dir: Path, changed, before, base_log, head_log) -> None:
        rules = self.policy.lint
        options = LintOptions(
            known_tables={t.split(".")[-1] for t in before.tables} | set(before.tables),
            table_rows={name: size.rows for name, size in self.policy.tables.items()},
            column_types={
                name: {column.name: column.type for column in table.columns}
                for name, table in before.tables.items()
            },
            # A versioned tool records what it applied and never runs a revision twice.
            require_idempotent=(
                self.policy.migrations.reapply and not self.policy.migrations.versioned
            )
            if rules.require_idempotent is None
            else rules.require_idempotent,
            pg_version=rules.pg_version,
            severity=rules.severity,
            disabled=rules.disabled,
        )
        suppressed: list[Finding] = []
        for path, sql in migrator.changed_sql(head_dir, changed):
            result = lint_sql(sql, file=path, options=options)
            self.findings.extend(result.findings)
            suppressed.extend(result.suppressed)
        # Directory migrations were linted from their files above; other modes only show up
        # in the statement log. Every mode gets its statements' durations on record.
        lint_log = self.policy.migrations.mode != "directory"
        located = []
        files = sqllog.read_changed(head_dir, self.added_lines)
        for statement, revision in self._introduced(migrator, base_log, head_log):
            path, line = sqllog.locate(statement.sql, files, self.added_lines)
            if revision is not None and path != revision.path:
                # Alembic's op.* calls hold no SQL text: the revision's upgrade() issued it.
                path, line = revision.path, _upgrade_line(head_dir / revision.path)
            located.append({**statement.__dict__, "file": path, "line": line})
            if lint_log:
                result = lint_sql(
                    statement.sql,
                    file=path or _UNLOCATED.get(self.policy.migrations.mode, "(migration)"),
                    options=options,
                    line_offset=(line or 1) - 1,
                )
                self.findings.extend(result.findings)
                suppressed.extend(result.suppressed)
        self.evidence["migration"]["introduced_sql"] = located
        self.observed.findings = _dedupe(self.findings)
        self.findings = self.observed.findings
        self.evidence["suppressed_findings"] = [
            f.model_dump(mode="json") for f in _dedupe(suppressed)
        ]

    @staticmethod
    def _introduced(migrator: Migrator, base_log: str, head_log: str):
        """The change's new statements, each with the revision that ran it (versioned tools
        apply one revision at a time, each with its own slice of the log)."""
        if not migrator.revision_logs:
            return [(statement, None) for statement in sqllog.introduced(base_log, head_log)]
        return [
            (statement, revision)
            for revision, log in migrator.revision_logs
            for statement in sqllog.introduced(base_log, log)
        ]

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

    def _baseline(self, sandbox, migrator, base_dir, suites, headers) -> None:
        """Run the suites against the base branch too, so the report can say what the change
        fixed and what it broke. Informational: a baseline failure never decides anything,
        except a failed login: the policy's credentials do not work on reviewed code."""
        if migrator.spec is None or not suites:
            return
        if sandbox.api_url is None:
            try:
                migrator.start_api(base_dir, "base")
            except ApiStartError as exc:
                self.evidence["baseline_error"] = f"the base branch's API did not start: {exc}"
                return
        ctx = self._context(sandbox, headers, migrator.start_marks)
        for suite in suites:
            result = run_suite(suite, ctx)
            if result.login_error:
                raise Infrastructure(
                    f"the base branch's login failed ({suite.id}): {result.login_error}; "
                    "no baseline"
                )
            for step in result.steps:
                self.baseline[step.criterion.id] = step

    def _compare_with_baseline(self) -> None:
        rows = []
        for crit in self.criteria:
            base = self.baseline.get(crit.id)
            if base is None:
                continue
            before = base.criterion.status
            if before is Status.passed and crit.status is Status.failed:
                crit.evidence += " — it passed on the base branch: this change broke it"
            elif before is not Status.passed and crit.status is Status.passed:
                crit.evidence += " — it failed on the base branch: this change fixed it"
            rows.append(
                {
                    "id": crit.id,
                    "title": crit.title,
                    "base": before.value,
                    "head": crit.status.value,
                    "base_ms": base.duration_ms,
                    "head_ms": crit.duration_ms,
                    "base_evidence": base.criterion.evidence,
                }
            )
        self.evidence["baseline"] = rows

    def _checks(self, sandbox, migrator, head_dir, suites, headers) -> None:
        spec = migrator.spec
        if spec is not None and sandbox.api_url is None:
            try:
                migrator.start_api(head_dir, "head")
            except BuildFailed as exc:
                self._image_failed(exc, suites)
            except ApiStartError as exc:
                self.criterion(
                    "api.start",
                    "the API starts on the migrated database",
                    False,
                    f"{exc}\n{tail(exc.log_tail, 25)}",
                    gate=True,
                )
                self._skip_all(suites, "not run: the API did not start")
                return
        ctx = self._context(sandbox, headers, migrator.start_marks)
        for suite in suites:
            self.progress(f"checks: {suite.id}")
            result = run_suite(suite, ctx)
            self.suite_results.append(result)
            for step in result.steps:
                crit = step.criterion
                crit.required = is_required(crit.id, crit.required, self.policy.decision)
                self.criteria.append(crit)
                budget = next(
                    (s.within_ms for s in suite.steps if s.id == crit.id.split("/")[-1]), None
                )
                if budget and crit.duration_ms and crit.duration_ms > 0.8 * budget:
                    self.observed.slow_steps.append(
                        f"{crit.id} took {crit.duration_ms:.0f} ms of its {budget:.0f} ms budget"
                    )
        self.evidence["suites"] = [r.model_dump(mode="json") for r in self.suite_results]
        self._compare_with_baseline()

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

    def _build_both(self, base_dir: Path, head_dir: Path, suites) -> None:
        """Each side runs its migrations, seed and API in its own build: the merge result's
        failing is the change's (a reject), the base's an error (no baseline).

        The two are independent: they build side by side, unless they would build the same
        cached thing, when the base builds it and the merge result reuses it. A base kept by
        an earlier run of the batch is not built: only what it became is needed."""
        cache = BuildCache(self.policy.build)

        def build(workdir: Path, label: str) -> list[dict[str, Any]]:
            with self.stage(f"build {label}", within="build"):
                return self._build(workdir, label, cache)

        if self.restoring is not None:
            base_builds, builds = [], build(head_dir, "merge")
        elif cache.enabled and cache.key(base_dir) == cache.key(head_dir):
            base_builds = build(base_dir, "base")
            builds = build(head_dir, "merge") if _built(base_builds) else []
        else:
            with ThreadPoolExecutor(2, thread_name_prefix="gatekeeper-build") as pool:
                head = pool.submit(build, head_dir, "merge")
                try:
                    base_builds = build(base_dir, "base")
                    builds = head.result()
                except BaseException:
                    # Ctrl-C lands here: the pool must not wait out the other build.
                    self.confinement.kill_all()
                    raise
        self.evidence["build"] = [*builds]
        self._base_built(base_builds)
        ok = _built(builds)
        failed = next((b for b in builds if b["exit"] != 0), None)
        self.criterion(
            "build",
            "the merge result builds",
            ok,
            (
                builds[0]["command"]
                if builds and builds[0].get("cached")
                else f"{len(builds)} command(s) ran"
            )
            if ok
            else f"`{failed['command']}` exited {failed['exit']}: "
            f"{shell.reason(failed['tail'])}\n{failed['tail']}",
            gate=True,
        )
        if not ok:
            self._skip_all(suites, "not run: the build failed")
            raise Aborted

    def _base_built(self, base_builds: list[dict[str, Any]]) -> None:
        """Records the base's builds; one that failed leaves no baseline: an error."""
        self.evidence["build"] += base_builds
        broken = next((b for b in base_builds if b["exit"] != 0), None)
        if broken:
            raise Infrastructure(
                f"the base branch does not build (`{broken['command']}` exited "
                f"{broken['exit']}): no baseline to compare against",
                broken["tail"],
            )

    def _build(self, workdir: Path, label: str, cache: BuildCache) -> list[dict[str, Any]]:
        """`build.commands` in `workdir`, or a cached build whose key files match
        (bot/sandbox/buildcache.py); only the base's builds are stored."""
        key = cache.key(workdir) if cache.enabled else ""
        if key and cache.restore(key, workdir):
            keyed = ", ".join(self.policy.build.cache_key)
            result = {
                "label": label,
                "command": f"reused the cached build {key[:12]} ({keyed} unchanged)",
                "exit": 0,
                "seconds": 0.0,
                "tail": "",
                "cached": True,
            }
            return [result]
        results = self._run_build(workdir, label)
        if key and label == "base" and all(r["exit"] == 0 for r in results):
            cache.store(key, workdir)
        return results

    def _run_build(self, workdir: Path, label: str) -> list[dict[str, Any]]:
        results = []
        budget_end = time.monotonic() + self.policy.build.timeout
        for command in self.policy.build.commands:
            start = time.monotonic()
            confined = self.confinement
            prefix = confined.networked if self.policy.build.network else confined.prefix
            result = shell.run(command, workdir, self.child_env, budget_end - start, prefix)
            output = result.output
            if result.code is None:
                output += f"\n(timed out: build.timeout is {self.policy.build.timeout:.0f} s)"
            results.append(
                {
                    "label": label,
                    "command": command,
                    "exit": -1 if result.code is None else result.code,
                    "seconds": round(time.monotonic() - start, 3),
                    "tail": tail(output, 30),
                }
            )
            if result.code != 0:
                break
        return results

    # -- the verdict -------------------------------------------------------------------------

    def _verdict(self, started_at: str, error: Infrastructure | None) -> Verdict:
        self.observed.criteria = self.criteria
        rated: dict[str, Any] = {}
        if error is None:
            try:
                rating = assess(self.observed)
                decision, reasons = decide(self.criteria, rating.level, self.policy.decision)
            except Exception as exc:  # a bug in rating or deciding must not approve either
                error = Infrastructure(f"internal error: {type(exc).__name__}: {exc}")
            else:
                passed = sum(c.status is Status.passed for c in self.criteria)
                # The factor that set the level is named: a rating nobody can trace is ignored.
                counts = f"{rating.named()}; {passed}/{len(self.criteria)} criteria passed"
                cause = root_cause(self.criteria) if decision is Decision.reject else None
                # A reject leads with what broke first; the rest follows from it or beside it.
                summary = f"{decision.value}: " + (f"{cause} ({counts})" if cause else counts)
                # Findings the run disproved are shown apart and annotate no line.
                self.findings = rating.findings
                rated = {
                    "risk": rating.level,
                    "risk_factors": rating.factors,
                    "disproved": rating.disproved,
                }
        if error is not None:
            if error.log_tail:
                self.evidence["error_log"] = tail(error.log_tail)
            decision, reasons, summary = Decision.error, [str(error)], f"error: {error}"
            rated = {"risk": None}
        return Verdict(
            decision=decision,
            summary=summary,
            reasons=reasons,
            job=self.job.model_dump(mode="json"),
            criteria=self.criteria,
            findings=self.findings,
            stages=self.stages,
            evidence=self.evidence,
            started_at=started_at,
            seconds=round(time.monotonic() - self.started, 3),
            **rated,
        )


# The errors no choice of values avoids: a NOT NULL column without a value on a non-empty
# table (ADD COLUMN … NOT NULL, SET NOT NULL over NULLs, an INSERT leaving it out).
_ANY_ROW_FAILS = re.compile(r"contains null values|violates not-null constraint")
# Migration tools' own ledgers: never filled with generated rows (a tool would take them
# for applied versions).
_BOOKKEEPING = {
    "alembic_version",
    "schema_migrations",
    "flyway_schema_history",
    "django_migrations",
    "goose_db_version",
    "knex_migrations",
}
_UNLOCATED = {"startup": "(run at start-up)", "command": "(run by the migration command)"}
_NOTHING_NEW = {
    "startup": "the API's start-up migrations",
    "directory": "no new migration file",
    "command": "the migration command",
    "alembic": "no new revision (`upgrade head` had nothing to do)",
}
_MIGRATION_PATH = re.compile(r"(^|/)(migrations?|versions|alembic|db/migrate)/|\.sql$")
_DDL_LINE = re.compile(r"\b(ADD|DROP|ALTER|CREATE|RENAME)\b|column_name", re.IGNORECASE)
_LOCKING_TAGS = {"ALTER TABLE", "CREATE INDEX", "DROP INDEX", "CREATE TRIGGER", "ALTER INDEX"}


def _table_of(event: ddl.DdlEvent, existing: set[str]) -> str | None:
    """The existing table an event touched: the object itself, or an index's table."""
    identity = event.object_identity or ""
    if identity in existing:
        return identity
    query = event.query or ""
    for table in existing:
        short = table.split(".")[-1]
        if event.object_type == "index" and re.search(
            rf"\bON\s+(ONLY\s+)?(\w+\.)?\"?{re.escape(short)}\"?\b", query, re.IGNORECASE
        ):
            return table
    return None


def _declared(tables: Mapping[str, Any], table: str) -> int | None:
    """The declared production rows of `table`, however the policy spells its name."""
    return next(
        (size.rows for name, size in tables.items() if table_key(name) == table_key(table)), None
    )


def _grows(held: sqllog.Held | None) -> bool:
    return held is not None and held.grows


def _built(builds: list[dict[str, Any]]) -> bool:
    return all(b["exit"] == 0 for b in builds)


def _touched(before, after, head_log: str, locked: Mapping[str, Any]) -> set[str]:
    """Base tables the change altered, indexed, constrained, locked or wrote to."""
    names = set(locked)
    for change in schema.diff(before, after).changes:
        names.add(change.name)
        index = after.indexes.get(change.name) or before.indexes.get(change.name)
        if index is not None:
            names.add(index.table)
    written = {table_key(table) for _sql, table, _verb in sqllog.dml(head_log)}
    return {
        table
        for table in before.tables
        if table.split(".")[-1].strip('"') not in _BOOKKEEPING
        and (
            table_key(table) in written
            or any(name == table or name.startswith(table + ".") for name in names)
        )
    }


def _dml_changes(before: dict, after: dict) -> dict[str, dict[str, int]]:
    """Rows inserted/updated/deleted per table between two `replay.dml_counts`."""
    out = {}
    for table, (ins, upd, dele, _live) in after.items():
        old = before.get(table, (0, 0, 0, 0))
        out[table] = {"INSERT": ins - old[0], "UPDATE": upd - old[1], "DELETE": dele - old[2]}
    return out


def _upgrade_line(path: Path) -> int | None:
    """The line of a revision file's `def upgrade`, where its statements come from."""
    with suppress(OSError):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if text.startswith("def upgrade"):
                return number
    return None


def _asks_to_stop(cancelled: Callable[[], bool]) -> bool:
    """A caller that cannot tell (its database is down) has not asked: the stage goes on."""
    try:
        return cancelled()
    except Exception:
        return False


def _terminate_sessions(sandbox: Sandbox) -> None:
    """End every session of the change's role (on its own connection: the run's is busy)."""
    with suppress(psycopg.Error), psycopg.connect(sandbox.database_url, autocommit=True) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (APP_ROLE,),
        )


def _said(exc: SandboxError) -> str:
    """A failed helper's error with the last line it printed (where its reason is)."""
    lines = exc.log_tail.strip().splitlines()
    return f"{exc}: {lines[-1]}" if lines else str(exc)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    out: dict[tuple[str, str | None, str | None], Finding] = {}
    for f in findings:
        out.setdefault((f.rule, f.statement, f.message), f)
    return list(out.values())


def _extension_message(names: list[str], binaries: str) -> str:
    listed = ", ".join(f"'{n}'" for n in names)
    return (
        f"the migrations need the extension(s) {listed}, which the PostgreSQL in use "
        f"(database.binaries: {binaries}) does not ship. This is not the change's fault. "
        "Set `database.binaries: system` in the policy (with the distribution's "
        "postgresql package installed, e.g. `apt-get install postgresql-15`) or point it "
        "at a PostgreSQL bin directory that has them."
    )
