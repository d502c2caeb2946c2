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
from bot.resources import data_path
from bot.yamlfile import ConfigError, load_model

# Where a repository keeps its own policy (read from the base branch, never the PR's head).
REPO_POLICY_PATH = ".github/gatekeeper.yml"


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    source: str  # what to show a user: a path, or "<ref>:.github/gatekeeper.yml"
    base_dir: Path  # relative suite paths resolve against this

    def suite_paths(self) -> list[Path]:
        paths = [(self.base_dir / entry).resolve() for entry in self.policy.suites]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            problem = f"{self.source}: suites not found: {', '.join(missing)}"
            raise ConfigError(self.source, [problem])
        return paths


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
        raise ConfigError(where, [f"{where} needs ${{{name}}}, which is not set"]) from None
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
