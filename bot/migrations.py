"""Applying migrations the way the repository does: at API start-up, from a directory, or by
a command. The pipeline asks for three things — establish the base schema, apply the
change, apply it again — and this module knows how for each mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pglast
import psycopg

from bot import shell
from bot.policy.model import Policy
from bot.sandbox import ApiSpec, Sandbox


class MigrationFailed(Exception):
    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class Migrator:
    def __init__(
        self,
        policy: Policy,
        sandbox: Sandbox,
        spec: ApiSpec | None,
        conn: psycopg.Connection,
        environ: Mapping[str, str],
        deadline: float,
        confine: Sequence[str] = (),
    ):
        """`environ` is the run's environment (the build's too); `deadline` the run's end, on
        `time.monotonic()`'s clock: a migration command gets what is left of it; `confine`
        the command line that confines it (bot/sandbox/confine.py), as it does the API."""
        self.policy = policy
        self.environ = environ
        self.deadline = deadline
        self.confine = tuple(confine)
        self.mode = policy.migrations.mode
        self.sandbox = sandbox
        self.spec = spec
        self.conn = conn
        self.base_files: dict[str, str] = {}
        self.head_files: dict[str, str] = {}  # the files the change adds, name -> SQL
        self.edited: list[str] = []
        # Log positions at the latest API start, for checks that read 'since: api_start'.
        self.start_marks: dict[str, int] = {}
        self._app_conn: psycopg.Connection | None = None

    def close(self) -> None:
        if self._app_conn is not None:
            self._app_conn.close()

    # -- the three phases --------------------------------------------------------------------

    def establish_base(self, base_dir: Path) -> None:
        """Create the base schema. In startup mode the base API is left running."""
        if self.mode == "startup":
            self.start_api(base_dir, "base")
        elif self.mode == "directory":
            self.base_files = self._sql_files(base_dir)
            for name, sql in self.base_files.items():
                self._run_sql(name, sql)
        else:
            self._run_command(base_dir, "base")

    def apply_head(self, head_dir: Path) -> list[str]:
        """Apply what the change adds; returns the files applied (directory mode)."""
        if self.mode == "startup":
            self.start_api(head_dir, "head")
            return []
        if self.mode == "directory":
            files = self._sql_files(head_dir)
            self.edited = [
                name
                for name, sql in files.items()
                if name in self.base_files and self.base_files[name] != sql
            ]
            self.head_files = {n: sql for n, sql in files.items() if n not in self.base_files}
            for name, sql in self.head_files.items():
                self._run_sql(name, sql)
            return list(self.head_files)
        self._run_command(head_dir, "head")
        return []

    def reapply(self, head_dir: Path) -> None:
        """A retried deploy or a second replica does exactly this."""
        if self.mode == "startup":
            self.sandbox.stop_api()
            self.start_api(head_dir, "head (second start)")
        elif self.mode == "directory":
            for name, sql in self.head_files.items():
                self._run_sql(name, sql)
        else:
            self._run_command(head_dir, "head (second run)")

    def changed_sql(self, head_dir: Path, changed: list) -> list[tuple[str, str]]:
        """SQL files the change added or modified, for the text linter."""
        out = []
        for f in changed:
            if f.status != "D" and f.path.endswith(".sql"):
                out.append((f.path, (head_dir / f.path).read_text(encoding="utf-8")))
        return out

    # -- modes -------------------------------------------------------------------------------

    def start_api(self, checkout: Path, name: str) -> None:
        assert self.spec is not None and self.policy.api is not None
        self.start_marks = {s: self.sandbox.log_mark(s) for s in ("api", "database")}
        self.sandbox.start_api(checkout / self.policy.api.workdir, self.spec, name)

    def _sql_files(self, checkout: Path) -> dict[str, str]:
        directory = checkout / (self.policy.migrations.directory or "")
        if not directory.is_dir():
            return {}
        return {
            str(path.relative_to(checkout)): path.read_text(encoding="utf-8")
            for path in sorted(directory.glob("*.sql"))
        }

    def _run_sql(self, name: str, sql: str) -> None:
        """Statement by statement in autocommit, as psql -f does, so CONCURRENTLY works; as
        the application's role, like every other way the change's SQL reaches the database."""
        if self._app_conn is None or self._app_conn.closed:
            self._app_conn = psycopg.connect(self.sandbox.gate_app_url, autocommit=True)
        for statement in _statements(name, sql):
            try:
                self._app_conn.execute(statement.text)
            except psycopg.Error as exc:
                position = int(exc.diag.statement_position or 1)
                line = statement.line + statement.text.count("\n", 0, position - 1)
                raise MigrationFailed(f"{name}:{line}: {_pg_message(exc)}") from None

    def _run_command(self, checkout: Path, label: str) -> None:
        command = self.policy.migrations.command or ""
        env_name = self.spec.database_url_env if self.spec else "DATABASE_URL"
        env = {**self.environ, env_name: self.sandbox.app_database_url}
        remaining = max(self.deadline - time.monotonic(), 0.0)
        result = shell.run(command, checkout, env, remaining, self.confine)
        if result.code != 0:
            ended = "timed out" if result.code is None else f"exited {result.code}"
            raise MigrationFailed(
                f"migration command ({label}) `{command}` {ended}: {shell.reason(result.output)}",
                result.output,
            )


class _Statement:
    def __init__(self, text: str, line: int):
        self.text = text
        self.line = line


def _statements(name: str, sql: str) -> list[_Statement]:
    try:
        parts = pglast.split(sql, with_parser=True, only_slices=True)
    except pglast.parser.ParseError as exc:
        message, index = exc.args[0], exc.args[1] if len(exc.args) > 1 else 0
        line = sql.count("\n", 0, max(index, 0)) + 1
        raise MigrationFailed(f"{name}:{line}: {message}") from None
    return [_Statement(sql[part], sql.count("\n", 0, part.start) + 1) for part in parts]


def _pg_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    return diag.message_primary or str(exc).strip()
