"""Alembic, the versioned tool: revisions that record what they applied, run by the project's
own Alembic in the project's own environment.

A versioned tool never runs a revision twice, so what matters is not idempotency but the
graph: after the merge there must be exactly one head; the change's revisions are applied one
at a time (so every statement the server logs belongs to one revision file); the models must
match the migrated schema (`alembic check`); and the revisions must come down again to the
base's head and go back up.

Every Alembic process is the change's code (env.py, the revision files, the models): it runs
like a migration command — confined (bot/sandbox/confine.py), with the run's constructed
environment and what is left of the run's time.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.policy.model import Migrations
from bot.sandbox import shell

_MARK = "GATEKEEPER-ALEMBIC-GRAPH "
# Runs in the project's interpreter: reads the revision files, never the database or env.py.
_GRAPH = f"""
import json, sys
from alembic.config import Config
from alembic.script import ScriptDirectory
script = ScriptDirectory.from_config(Config(sys.argv[1]))
revisions = []
for rev in script.walk_revisions():
    down = rev.down_revision
    downs = [down] if isinstance(down, str) else list(down or ())
    revisions.append({{"id": rev.revision, "down": downs, "path": rev.path}})
print({_MARK!r} + json.dumps({{"heads": list(script.get_heads()), "revisions": revisions}}))
"""


class AlembicFailed(Exception):
    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.log_tail = output


@dataclass(frozen=True)
class Revision:
    id: str
    down: tuple[str, ...]
    path: str  # relative to the checkout

    def label(self) -> str:
        return f"{self.path} (revision {self.id})"


@dataclass(frozen=True)
class Graph:
    heads: tuple[str, ...]
    revisions: dict[str, Revision]

    def new_since(self, base: Graph) -> list[Revision]:
        """The revisions `base` does not have, parents before children."""
        new = {rid: rev for rid, rev in self.revisions.items() if rid not in base.revisions}
        ordered: list[Revision] = []
        placed: set[str] = set()

        def place(rid: str) -> None:
            if rid in placed or rid not in new:
                return
            placed.add(rid)
            for parent in new[rid].down:
                place(parent)
            ordered.append(new[rid])

        for rid in sorted(new):
            place(rid)
        return ordered


class Alembic:
    def __init__(
        self,
        settings: Migrations,
        environ: Mapping[str, str],
        deadline: float,
        confine: Sequence[str],
    ):
        self.settings = settings
        self.environ = environ
        self.deadline = deadline
        self.confine = tuple(confine)

    def graph(self, checkout: Path) -> Graph:
        config = shlex.quote(self.settings.config)
        output = self._python(
            checkout, f"-c {shlex.quote(_GRAPH)} {config}", "read the revision graph"
        )
        line = next((ln for ln in output.splitlines() if ln.startswith(_MARK)), None)
        if line is None:
            raise AlembicFailed("alembic printed no revision graph", output)
        data = json.loads(line[len(_MARK) :])
        root = checkout.resolve()
        revisions = {}
        for item in data["revisions"]:
            path = Path(item["path"]).resolve()
            shown = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
            revisions[item["id"]] = Revision(item["id"], tuple(item["down"]), shown)
        return Graph(tuple(data["heads"]), revisions)

    def upgrade(self, checkout: Path, target: str, label: str) -> str:
        return self._alembic(checkout, f"upgrade {shlex.quote(target)}", label)

    def downgrade(self, checkout: Path, target: str, label: str) -> str:
        return self._alembic(checkout, f"downgrade {shlex.quote(target)}", label)

    def check(self, checkout: Path) -> tuple[bool, str]:
        """`alembic check`: (True, '') when the models match the schema, else the
        differences Alembic's autogenerate found."""
        try:
            self._alembic(checkout, "check", "compare the models with the schema")
        except AlembicFailed as exc:
            return False, exc.log_tail
        return True, ""

    def _alembic(self, checkout: Path, arguments: str, label: str) -> str:
        config = shlex.quote(self.settings.config)
        return self._python(checkout, f"-m alembic -c {config} {arguments}", label)

    def _python(self, checkout: Path, arguments: str, label: str) -> str:
        workdir = checkout / self.settings.workdir
        python = self.settings.python
        command = f"{shlex.quote(python)} {arguments}"
        remaining = max(self.deadline - time.monotonic(), 0.0)
        result = shell.run(command, workdir, self.environ, remaining, self.confine)
        if result.code == 0:
            return result.output
        ended = "timed out" if result.code is None else f"exited {result.code}"
        reason = shell.reason(result.output)
        if "No module named alembic" in result.output:
            reason = (
                f"`{python}` has no Alembic: set migrations.python to the build's interpreter "
                "(e.g. .venv/bin/python)"
            )
        raise AlembicFailed(f"alembic ({label}) {ended}: {reason}", result.output)
