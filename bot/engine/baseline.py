"""The base side: its schema, seed and baseline checks, made in the run or restored from the
base a batch's earlier run kept (bot/engine/kept.py).

Part of the run (bot/engine/pipeline.py): the base is reviewed code, so its failures are the
gate's errors (no baseline to compare against), never the change's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

from bot.checking import run_suite
from bot.engine.building import Building
from bot.engine.kept import BaseRecord
from bot.engine.state import Infrastructure
from bot.migrating.migrations import MigrationFailed, Migrator
from bot.observing import ddl
from bot.sandbox import ApiStartError, Sandbox, SandboxError
from bot.sandbox.buildcache import BuildCache
from bot.sandbox.postgres import APP_ROLE


class Baseline(Building):
    """The run's base stages."""

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


def _said(exc: SandboxError) -> str:
    """A failed helper's error with the last line it printed (where its reason is)."""
    lines = exc.log_tail.strip().splitlines()
    return f"{exc}: {lines[-1]}" if lines else str(exc)
