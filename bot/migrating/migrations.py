"""Applying migrations the way the repository does: at API start-up, from a directory, by a
command, or with a versioned tool (Alembic, bot/migrating/versioned.py). The pipeline asks for three
things — establish the base schema, apply the change, apply it again — and this module knows
how for each mode; seeding the base and the versioned tool's extra checks live here too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pglast
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bot.migrating.versioned import Alembic, AlembicFailed, Graph, Revision
from bot.policy.model import Policy
from bot.sandbox import ApiSpec, ApiStartError, Sandbox, shell


class MigrationFailed(Exception):
    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class SeedFailed(MigrationFailed):
    """The seed did not run on the base schema: no baseline, and never the change's fault."""


class TwoHeads(MigrationFailed):
    """After the merge the revision graph has more than one head: `upgrade head` fails in
    production until someone writes a merge revision."""


class Migrator:
    def __init__(
        self,
        policy: Policy,
        sandbox: Sandbox,
        spec: ApiSpec | None,
        environ: Mapping[str, str],
        deadline: float,
        confine: Sequence[str] = (),
    ):
        """`environ` is the run's environment (the build's too); `deadline` the run's end, on
        `time.monotonic()`'s clock: a migration command gets what is left of it; `confine`
        the command line that confines it (bot/sandbox/confine.py), as it does the API."""
        self.policy = policy
        env_name = spec.database_url_env if spec else "DATABASE_URL"
        # Migration and seed commands get the run's environment and the database URL.
        self.environ = {**environ, env_name: sandbox.app_database_url}
        self.deadline = deadline
        self.confine = tuple(confine)
        self.mode = policy.migrations.mode
        self.sandbox = sandbox
        self.spec = spec
        self.base_files: dict[str, str] = {}
        self.head_files: dict[str, str] = {}  # the files the change adds, name -> SQL
        self.edited: list[str] = []
        # Log positions at the latest API start, for checks that read 'since: api_start'.
        self.start_marks: dict[str, int] = {}
        self._app_conn: psycopg.Connection | None = None
        self.alembic = Alembic(policy.migrations, self.environ, deadline, self.confine)
        self.base_graph: Graph | None = None
        # alembic: each applied revision with the database log its upgrade wrote.
        self.revision_logs: list[tuple[Revision, str]] = []

    def close(self) -> None:
        if self._app_conn is not None:
            self._app_conn.close()

    # -- the three phases --------------------------------------------------------------------

    def read_base(self, base_dir: Path) -> None:
        """What the change's migrations are told apart from (the base's SQL files, its
        revision graph), without applying anything: a restored base (bot/engine/kept.py)
        needs it as much as one migrated here."""
        self.base_dir = base_dir
        if self.mode == "directory":
            self.base_files = self._sql_files(base_dir)
        elif self.mode == "alembic":
            with _as_migration():
                self.base_graph = self.alembic.graph(base_dir)

    def establish_base(self, base_dir: Path) -> None:
        """Create the base schema. In startup mode the base API is left running."""
        self.read_base(base_dir)
        if self.mode == "startup":
            self.start_api(base_dir, "base")
        elif self.mode == "directory":
            for name, sql in self.base_files.items():
                self._run_sql(name, sql)
        elif self.mode == "alembic":
            with _as_migration():
                self.alembic.upgrade(base_dir, "heads", "base")
        else:
            self._run_command(base_dir, "base")

    def seed(self, base_dir: Path) -> None:
        """The policy's seed, on the base schema (bot/policy/model.py: Seed)."""
        seed = self.policy.seed
        for command in seed.commands:
            remaining = max(self.deadline - time.monotonic(), 0.0)
            result = shell.run(command, base_dir, self.environ, remaining, self.confine)
            if result.code != 0:
                ended = "timed out" if result.code is None else f"exited {result.code}"
                raise SeedFailed(
                    f"seed command `{command}` {ended}: {shell.reason(result.output)}",
                    result.output,
                )
        for name in seed.sql:
            path = base_dir / name
            if not path.is_file():
                raise SeedFailed(f"seed file {name} is not in the base branch")
            try:
                self._run_sql(name, path.read_text(encoding="utf-8"))
            except MigrationFailed as exc:
                raise SeedFailed(f"seed {exc}") from None

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
        if self.mode == "alembic":
            return self._upgrade_revisions(head_dir)
        self._run_command(head_dir, "head")
        return []

    def _upgrade_revisions(self, head_dir: Path) -> list[str]:
        """One revision at a time, each with its own slice of the server's log: every
        statement is then attributed to the revision file that issued it."""
        assert self.base_graph is not None
        with _as_migration():
            graph = self.alembic.graph(head_dir)
        if len(graph.heads) > 1:
            heads = ", ".join(graph.revisions[h].label() for h in graph.heads)
            raise TwoHeads(
                f"{len(graph.heads)} heads after the merge: {heads}; `alembic upgrade head` "
                "refuses to run until a merge revision joins them"
            )
        new = graph.new_since(self.base_graph)
        self.edited = [
            rev.path
            for rid, rev in graph.revisions.items()
            if rid in self.base_graph.revisions
            and _read(head_dir / rev.path) != _read(self.base_dir / rev.path)
        ]
        with _as_migration():
            for rev in new:
                mark = self.sandbox.log_mark("database")
                self.alembic.upgrade(head_dir, rev.id, f"head, {rev.id}")
                self.revision_logs.append((rev, self.sandbox.logs("database", mark)))
            if not new:  # nothing of the change's own: still what a deploy runs
                self.alembic.upgrade(head_dir, "heads", "head")
        self._check_recorded(graph)
        return [rev.label() for rev in new]

    def _check_recorded(self, graph: Graph) -> None:
        """What Alembic recorded as applied must be the graph's heads: a revision file that
        computes its ids at import could otherwise show the graph read from its text (two
        heads hidden, say) another graph than the one that ran."""
        try:
            with psycopg.connect(self.sandbox.database_url, autocommit=True) as conn:
                rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except psycopg.errors.UndefinedTable:
            return  # env.py names a version table of its own: nothing to compare with
        recorded = sorted(row[0] for row in rows)
        if recorded != sorted(graph.heads):
            raise MigrationFailed(
                f"Alembic recorded {', '.join(recorded) or 'nothing'} as applied, but the "
                f"revision files declare the head(s) {', '.join(graph.heads)}"
            )

    def replay(self, head_dir: Path, environ: Mapping[str, str], app_url: str, gate_url: str):
        """Apply the change again on another database (the populated replay): the same
        files, command or revisions, the database named by `environ` (the run's environment
        for that database), `app_url` (the change's URL for it) and `gate_url` (the same
        role, as the gate reaches it)."""
        env_name = self.spec.database_url_env if self.spec else "DATABASE_URL"
        environ = {**environ, env_name: app_url}
        if self.mode == "startup":
            self._start_on_copy(head_dir, environ, conninfo_to_dict(app_url)["dbname"])
        elif self.mode == "directory":
            with psycopg.connect(gate_url, autocommit=True) as conn:
                for name, sql in self.head_files.items():
                    self._execute(conn, name, sql)
        elif self.mode == "alembic":
            with _as_migration():
                Alembic(self.policy.migrations, environ, self.deadline, self.confine).upgrade(
                    head_dir, "heads", "populated replay"
                )
        elif self.mode == "command":
            self._run_command(head_dir, "populated replay", environ)

    def _start_on_copy(self, head_dir: Path, environ: Mapping[str, str], database: str) -> None:
        """Start-up migrations run inside the API: start the change's API on the copy (its
        own variables expanded for it), wait until it answers, stop it. An API that does not
        come up failed its migrations there; the error is its log's."""
        assert self.spec is not None and self.policy.api is not None
        spec = replace(
            self.spec,
            env={name: environ.get(name, value) for name, value in self.spec.env.items()},
            database=database,
        )
        try:
            self.sandbox.start_api(head_dir / self.policy.api.workdir, spec, "populated replay")
        except ApiStartError as exc:
            raise MigrationFailed(
                f"the API did not start on the copy: {shell.reason(exc.log_tail) or exc}",
                exc.log_tail,
            ) from None
        finally:
            self.sandbox.stop_api()

    def check_models(self, head_dir: Path) -> tuple[bool, str]:
        """alembic: do the models match the migrated schema (`alembic check`)?"""
        return self.alembic.check(head_dir)

    def down_to_base(self, head_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        """alembic: downgrade the merge result's revisions to the base's head, on the
        database `environ` names (default: the run's own)."""
        assert self.base_graph is not None
        heads = self.base_graph.heads
        if len(heads) > 1:
            raise MigrationFailed(f"the base has {len(heads)} heads: no single revision to go to")
        with _as_migration():
            self._alembic(environ).downgrade(head_dir, heads[0] if heads else "base", "down")

    def up_again(self, head_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        with _as_migration():
            self._alembic(environ).upgrade(head_dir, "heads", "up again")

    def _alembic(self, environ: Mapping[str, str] | None) -> Alembic:
        if environ is None:
            return self.alembic
        return Alembic(self.policy.migrations, environ, self.deadline, self.confine)

    def reapply(self, head_dir: Path) -> None:
        """A retried deploy or a second replica does exactly this."""
        if self.mode == "startup":
            self.sandbox.stop_api()
            self.start_api(head_dir, "head (second start)")
        elif self.mode == "directory":
            for name, sql in self.head_files.items():
                self._run_sql(name, sql)
        elif self.mode == "alembic":
            with _as_migration():
                self.alembic.upgrade(head_dir, "heads", "head (second run)")
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
        self._execute(self._app_conn, name, sql)

    @staticmethod
    def _execute(conn: psycopg.Connection, name: str, sql: str) -> None:
        for statement in _statements(name, sql):
            try:
                conn.execute(statement.text)
            except psycopg.Error as exc:
                position = int(exc.diag.statement_position or 1)
                line = statement.line + statement.text.count("\n", 0, position - 1)
                raise MigrationFailed(f"{name}:{line}: {_pg_message(exc)}") from None

    def _run_command(
        self, checkout: Path, label: str, environ: Mapping[str, str] | None = None
    ) -> None:
        command = self.policy.migrations.command or ""
        remaining = max(self.deadline - time.monotonic(), 0.0)
        env = self.environ if environ is None else environ
        result = shell.run(command, checkout, env, remaining, self.confine)
        if result.code != 0:
            ended = "timed out" if result.code is None else f"exited {result.code}"
            raise MigrationFailed(
                f"migration command ({label}) `{command}` {ended}: {shell.reason(result.output)}",
                result.output,
            )


@contextmanager
def _as_migration() -> Iterator[None]:
    """An Alembic failure is a migration failure, for the pipeline's fault rules."""
    try:
        yield
    except AlembicFailed as exc:
        raise MigrationFailed(str(exc), exc.log_tail) from None


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


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
