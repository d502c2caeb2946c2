"""The validation pipeline: one Job in, one Verdict out. Every entry point calls `validate`.

Order matters and mirrors what a careful maintainer does by hand: merge, build, establish
the base branch's schema, apply the change's migrations (twice), compare schemas, drive the
API, re-check earlier fixes, then rate and decide. Who is at fault decides the outcome: a
failure of the change is a reject, a failure of the gate's own machinery is an error, and
nothing that did not run can count as passed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from bot.checking import load_suites
from bot.checking.auth import Credentials
from bot.engine.baseline import Baseline
from bot.engine.building import Building
from bot.engine.checks import Checks
from bot.engine.job import Job
from bot.engine.kept import KeptBase
from bot.engine.migration import Migration
from bot.engine.replaying import Replay
from bot.engine.state import (
    Aborted,
    Cancelled,
    Infrastructure,
    Progress,
    SandboxFactory,
    extension_message,
    tail,
)
from bot.gitrepo import Scratch
from bot.judging.decision import decide, root_cause
from bot.judging.risk import assess
from bot.judging.verdict import Decision, Status, Verdict
from bot.migrating import replay
from bot.migrating.migrations import Migrator
from bot.observing import ddl, schema
from bot.observing.locks import LockMonitor
from bot.policy import LoadedPolicy, api_env, duration_seconds
from bot.policy.yamlfile import ConfigError
from bot.reporting import masking
from bot.sandbox import ApiSpec, Sandbox, SandboxError, confine, environment
from bot.sandbox.postgres import APP_ROLE

_WATCH_INTERVAL = 0.5  # seconds between looks at the deadline and at `cancelled`


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


class _Run(Baseline, Building, Checks, Migration, Replay):
    """One run: the stages (the base classes' methods, module by module) in their order."""

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
            raise Infrastructure(extension_message(sorted(missing), self.policy.database.binaries))
        # Created here, by the gate: the change's role is no superuser, and many extensions
        # need one. Its own CREATE EXTENSION IF NOT EXISTS then finds them in place.
        for extension in sorted(wanted):
            conn.execute(SQL("CREATE EXTENSION IF NOT EXISTS {}").format(Identifier(extension)))

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
