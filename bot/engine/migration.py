"""The change's migrations: applied and recorded, applied again, linted, compared with the
models, and the way back (downgrade, then upgrade; rollback).

Part of the run (bot/engine/pipeline.py).
"""

from __future__ import annotations

import re
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

from bot.engine.state import Aborted, Infrastructure, RunState, tail
from bot.judging import rollback
from bot.judging.decision import is_required
from bot.judging.lint import LintOptions, lint_sql
from bot.judging.lint.model import table_key
from bot.judging.verdict import Criterion, Finding, Risk, Status
from bot.migrating.migrations import MigrationFailed, Migrator, TwoHeads
from bot.observing import ddl, schema, sqllog
from bot.observing.locks import lock_strength
from bot.policy import duration_seconds
from bot.sandbox import ApiStartError, Sandbox, shell
from bot.sandbox.base import BuildFailed, url_for

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


class Migration(RunState):
    """The run's migration stages."""

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
        steps = (
            (migrator.down_to_base, "the downgrade", before, "after the downgrade", "the base's"),
            (
                migrator.up_again,
                "the upgrade after the downgrade",
                after,
                "upgraded again,",
                "the first upgrade's",
            ),
        )
        for step, name, expected, when, whose in steps:
            try:
                step(head_dir, environ)
            except MigrationFailed as exc:
                return f"{name} failed: {exc}"
            differs = schema.diff(expected, schema.snapshot(conn))
            if not differs.is_empty:
                lines = "\n".join(differs.lines()[:10])
                return f"{when} the schema differs from {whose}:\n{lines}"
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


def _upgrade_line(path: Path) -> int | None:
    """The line of a revision file's `def upgrade`, where its statements come from."""
    with suppress(OSError):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if text.startswith("def upgrade"):
                return number
    return None


def _dedupe(findings: list[Finding]) -> list[Finding]:
    out: dict[tuple[str, str | None, str | None], Finding] = {}
    for f in findings:
        out.setdefault((f.rule, f.statement, f.message), f)
    return list(out.values())
