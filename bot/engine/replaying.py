"""The populated replay: the change's migrations once more, on a copy of the base filled with
production-like rows (bot/migrating/replay.py), and the statements held under lock timed at
two sample sizes.

Part of the run (bot/engine/pipeline.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from bot.engine.state import RunState
from bot.judging.lint.model import table_key
from bot.judging.risk import Measured, predict_seconds
from bot.judging.verdict import Finding, Risk
from bot.migrating import replay
from bot.migrating.migrations import MigrationFailed, Migrator
from bot.observing import schema, sqllog
from bot.sandbox import Sandbox
from bot.sandbox.base import url_for
from bot.sandbox.postgres import APP_ROLE

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


class Replay(RunState):
    """The run's populated replay."""

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


def _declared(tables: Mapping[str, Any], table: str) -> int | None:
    """The declared production rows of `table`, however the policy spells its name."""
    return next(
        (size.rows for name, size in tables.items() if table_key(name) == table_key(table)), None
    )


def _grows(held: sqllog.Held | None) -> bool:
    return held is not None and held.grows


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
