"""Alembic, the versioned tool: revisions that record what they applied, run by the project's
own Alembic in the project's own environment.

A versioned tool never runs a revision twice, so what matters is not idempotency but the
graph (read from the revision files' text by `read_graph` where they are plain enough, else
by Alembic's own reader, which imports them): after the merge there must be exactly one
head; the change's revisions are applied one at a time (so every statement the server logs
belongs to one revision file); the models must match the migrated schema (`alembic check`);
and the revisions must come down again to the base's head and go back up.

Every Alembic process is the change's code (env.py, the revision files, the models): it runs
like a migration command — confined (bot/sandbox/confine.py), with the run's constructed
environment and what is left of the run's time.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
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


# Alembic's own test for a revision file (alembic/script/base.py, _only_source_rev_file).
_REVISION_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")
# [alembic] options that move or multiply where revisions live: Alembic's reader follows them.
_UNFOLLOWED = ("version_locations", "recursive_version_locations", "sourceless")
# Larger ini or revision files than this are not read by the gate itself.
_MAX_READ = 1 << 20


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
        """The revision graph: from the files' text when `read_graph` can (no process, and
        none of the change's code run), else from Alembic's reader in the project's
        interpreter."""
        workdir = checkout / self.settings.workdir
        return read_graph(workdir, self.settings.config, checkout) or self._read_by_alembic(
            checkout
        )

    def _read_by_alembic(self, checkout: Path) -> Graph:
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


def read_graph(workdir: Path, config: str, checkout: Path) -> Graph | None:
    """The graph from the revision files' text, the way Alembic's ScriptDirectory finds them:
    `script_location` of the ini's [alembic] section (`%(here)s` is the ini's directory, a
    relative path the working directory's), its `versions/`, every `*.py` but `__init__`,
    each file's module-level `revision` and `down_revision` literals.

    None when the project does something this does not follow — a package resource, other
    version locations, a pyproject.toml [tool.alembic], a file whose ids are not plain
    literals — and the caller asks Alembic itself. What Alembic then applies is checked
    against this graph's heads (Migrator), so a file that computes its ids cannot pass for
    another graph."""
    root = checkout.resolve()
    ini = workdir / config
    if not _plain_file(ini, root) or _pyproject_configures(workdir, root):
        return None
    parser = configparser.ConfigParser(defaults={"here": str(ini.resolve().parent)})
    try:
        parser.read(ini, encoding="utf-8")
        location = parser.get("alembic", "script_location", fallback=None)
        unfollowed = [o for o in _UNFOLLOWED if parser.get("alembic", o, fallback="").strip()]
    except (configparser.Error, UnicodeDecodeError):
        return None
    if not location or unfollowed or (":" in location and not Path(location).is_absolute()):
        return None
    versions = (workdir / location / "versions").resolve()
    if not versions.is_dir() or not versions.is_relative_to(root):
        return None
    revisions: dict[str, Revision] = {}
    for path in sorted(versions.iterdir()):
        if not _REVISION_FILE.match(path.name) or not (path.is_file() or path.is_symlink()):
            continue
        if not _plain_file(path, root):
            return None
        ids = _literal_ids(path)
        if ids is None or ids[0] in revisions:
            return None
        shown = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
        revisions[ids[0]] = Revision(ids[0], ids[1], shown)
    parents = {parent for rev in revisions.values() for parent in rev.down}
    if not parents <= revisions.keys():
        return None  # a parent no file declares: Alembic's own error says which
    heads = tuple(sorted(rid for rid in revisions if rid not in parents))
    return Graph(heads, revisions)


def _plain_file(path: Path, root: Path) -> bool:
    """A regular file of the checkout, not a link and not huge: the gate reads it as itself,
    unconfined, so a link the branch points at a file of the host's (or a file meant to
    exhaust it) is left to Alembic's reader, which runs confined."""
    try:
        return (
            not path.is_symlink()
            and path.is_file()
            and path.resolve().is_relative_to(root)
            and path.stat().st_size <= _MAX_READ
        )
    except OSError:
        return False


def _pyproject_configures(workdir: Path, root: Path) -> bool:
    """Whether a pyproject.toml may configure Alembic (one the gate will not read: yes)."""
    pyproject = workdir / "pyproject.toml"
    if not (pyproject.exists() or pyproject.is_symlink()):
        return False
    if not _plain_file(pyproject, root):
        return True
    try:
        return "[tool.alembic" in pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return True


def _literal_ids(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """(revision, down revisions) from the file's module-level assignments, or None when one
    is missing or not a literal (a string, None, or a tuple or list of strings)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                return None
    revision, down = found.get("revision"), found.get("down_revision")
    if not isinstance(revision, str) or "down_revision" not in found:
        return None
    if down is None:
        return revision, ()
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
        return revision, tuple(down)
    return None
