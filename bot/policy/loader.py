"""Find, read and check a policy file; expand the environment it refers to."""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.gitrepo import extract, read_file
from bot.policy.model import Policy
from bot.policy.yamlfile import ConfigError, load_model
from bot.resources import data_path
from bot.sandbox.environment import DATABASE_VARIABLES, PASS_ENV

# Where a repository keeps its own policy (read from the base branch, never the PR's head).
REPO_POLICY_PATH = ".github/gatekeeper.yml"


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    source: str  # what to show a user: a path, or "<ref>:.github/gatekeeper.yml"
    base_dir: Path  # relative suite paths resolve against this

    def suite_paths(self) -> list[Path]:
        """The suite files the policy names, each checked to lie inside the policy's tree.

        A repository's policy comes from a branch, and the gate reads what it names: an
        absolute path, a `..` too many or a symbolic link must not make it read the host's
        files (`/etc/passwd` as a "suite"). Directories are expanded to their *.yml and
        *.yaml files here, so each file is checked, links included; a directory with none
        is an error, since an entry that runs no check must not let a change through.
        `suites: []` (the default policy) still means no suites.
        """
        tree = _suite_tree(self.base_dir)
        problems: list[str] = []
        missing: list[str] = []
        files: list[Path] = []
        for entry in self.policy.suites:
            found = _suite_entry(self.source, tree, self.base_dir, entry, problems)
            if found is None:
                missing.append(str(self.base_dir / entry))
            else:
                files.extend(found)
        if missing:
            problems.append(f"{self.source}: suites not found: {', '.join(missing)}")
        if problems:
            raise ConfigError(self.source, problems)
        return files


def _suite_tree(base_dir: Path) -> Path:
    """The directory a policy's suites must stay inside, from where the policy file is.

    - In `.github/`: a repository's own policy (REPO_POLICY_PATH), in a work tree or in the
      tree `policy_at` extracts (no `.git` there): the tree is `.github`'s parent. First, so
      an extracted tree under a TMPDIR inside some work tree is not widened to it.
    - In the package data (bot/resources.py): its root, where `policies/` sits beside
      `checks/`, so `../checks` works from a wheel too.
    - In a git work tree: its top (the nearest directory holding `.git`, a file in worktrees
      and submodules), wherever in it the policy sits: policies/sessions-api.yml names
      `../checks`.
    - Elsewhere, the policy's own directory. Nothing marks where a project outside git
      ends, and "its parent" of /tmp/gatekeeper.yml would be `/`, /etc/passwd included.
    """
    base = base_dir.resolve()
    if base.name == Path(REPO_POLICY_PATH).parent.name:
        return base.parent
    data = data_path("policies").resolve().parent
    if _inside(base, data):
        return data
    for directory in (base, *base.parents):
        if (directory / ".git").exists():
            return directory
    return base


def _suite_entry(
    source: str, tree: Path, base_dir: Path, entry: str, problems: list[str]
) -> list[Path] | None:
    """The files of one `suites` entry; None when it does not exist. Problems name the entry."""
    named = f"{source}: suites entry '{entry}'"
    if not entry or "\0" in entry:
        problems.append(f"{named} is not a path")
        return []
    if Path(entry).is_absolute():
        problems.append(f"{named} is absolute; name suites relative to the policy file")
        return []
    # '..' first, as written (normpath does not follow links); then where links lead.
    if not _inside(Path(os.path.normpath(base_dir.resolve() / entry)), tree):
        problems.append(f"{named} leads outside {tree}, where this policy's suites must stay")
        return []
    try:
        real = (base_dir / entry).resolve()
        if not _inside(real, tree):
            problems.append(f"{named} is a link to {real}, outside {tree}")
            return []
        if not real.exists():
            return None
        if not real.is_dir():
            return [real]  # a FIFO or device is refused when read, before reading
        found = sorted({*real.glob("*.yml"), *real.glob("*.yaml")}, key=lambda f: f.name)
        files = [f for f in found if f.is_file()]
        links_out = [f for f in found if not _inside(f.resolve(), tree)]
    except OSError as exc:  # a name too long, a link loop
        problems.append(f"{named}: {exc.strerror or exc}")
        return []
    for file in links_out:
        problems.append(f"{named}: {file.name} is a link to {file.resolve()}, outside {tree}")
    if not files:
        problems.append(f"{named} holds no suite files (*.yml, *.yaml): it would run no check")
    return [] if links_out else files


def _inside(path: Path, tree: Path) -> bool:
    return path.is_relative_to(tree)


def default_policy_path() -> Path:
    return data_path("policies") / "default.yml"


def load_policy(path: str | Path) -> LoadedPolicy:
    path = Path(path)
    policy = load_model(path, Policy)
    return LoadedPolicy(policy, str(path), path.resolve().parent)


def load_policy_text(text: str, source: str, base_dir: Path) -> LoadedPolicy:
    """A policy read from git (the base branch) rather than from the filesystem."""
    return LoadedPolicy(load_model(source, Policy, text=text), source, base_dir)


@contextmanager
def policy_at(repo: Path, sha: str, default: Path | None = None) -> Iterator[LoadedPolicy]:
    """The policy in force for a change based on `sha`: the repository's own file at that
    commit, else `default`, else the packaged default.

    Read from the base commit, never from the change, so a change cannot relax its own gate.
    Suites named by a repository policy are read from the same commit (the tree is
    extracted to a temp dir for the duration).
    """
    text = read_file(repo, sha, REPO_POLICY_PATH)
    if text is None:
        yield load_policy(default or default_policy_path())
        return
    with tempfile.TemporaryDirectory(prefix="gatekeeper-policy-") as tmp:
        extract(repo, sha, Path(tmp))
        source = f"{sha[:12]}:{REPO_POLICY_PATH}"
        yield load_policy_text(text, source, Path(tmp) / Path(REPO_POLICY_PATH).parent)


def expand(value: str, environ: Mapping[str, str], where: str) -> str:
    """Expand ${NAME} from `environ`; a missing variable is a configuration error naming it."""
    try:
        return string.Template(value).substitute(environ)
    except KeyError as exc:
        name = exc.args[0]
        raise ConfigError(
            where,
            [
                f"{where} needs ${{{name}}}, which is neither the sandbox database's "
                f"({', '.join(DATABASE_VARIABLES)}) nor passed: set it and name it in {PASS_ENV}"
            ],
        ) from None
    except ValueError as exc:
        raise ConfigError(where, [f"{where}: {exc}"]) from None


def api_env(loaded: LoadedPolicy, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    api = loaded.policy.api
    if api is None:
        return {}
    return {
        key: expand(value, environ, f"{loaded.source}: api.env.{key}")
        for key, value in api.env.items()
    }
