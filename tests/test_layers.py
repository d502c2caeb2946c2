"""The packages' import table, and the engine never loading an edge.

`ALLOWED` is the architecture in one place: which packages of `bot` each package may import
(`bot` itself is the shared root modules: gitrepo, resources). Any other arrow fails, found
statically in every module, imports inside functions included. The engine packages come
first; the edges (github, app, actions, cli) may use the engine, never the reverse.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bot

PACKAGE = Path(bot.__file__).resolve().parent
ENGINE = {
    "sandbox",
    "policy",
    "observing",
    "judging",
    "checking",
    "reporting",
    "migrating",
    "engine",
}
ALLOWED: dict[str, set[str]] = {
    "bot": {"cli"},  # __main__
    "sandbox": {"bot", "policy"},
    "policy": {"bot", "sandbox", "judging", "checking"},
    "observing": set(),
    "judging": {"observing", "policy"},
    "checking": {"judging", "policy", "sandbox"},
    "reporting": {"judging"},
    "migrating": {"sandbox", "observing", "policy"},
    "engine": {"bot", *ENGINE},
    "github": {"bot", "app", "engine", "judging", "policy", "reporting"},
    "app": {"bot", "github", *ENGINE},
    "actions": {"bot", "github", "engine", "judging", "policy", "reporting"},
    "cli": {"bot", "app", "github", "actions", *ENGINE},
}
THIRD_PARTY_EDGES = ("fastapi", "github", "starlette", "procrastinate")


def _package(module: str) -> str:
    """'bot.judging.lint.rules' -> 'judging'; a root module ('bot.gitrepo') -> 'bot'."""
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "bot"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(path: Path) -> set[str]:
    """The bot packages a module imports, however it spells it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "bot":
                found.update(_package(f"bot.{alias.name}") for alias in node.names)
            elif node.module.startswith("bot."):
                found.add(_package(node.module))
        elif isinstance(node, ast.Import):
            found.update(_package(a.name) for a in node.names if a.name.startswith("bot."))
    return found


def test_every_package_is_in_the_table():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages | {"bot"} == set(ALLOWED)


@pytest.mark.parametrize("name, path", _modules(), ids=lambda v: str(v))
def test_a_module_imports_only_what_its_package_may(name, path):
    own = _package(name)
    wrong = sorted(_imports(path) - ALLOWED[own] - {own})
    assert not wrong, f"{name} ({own}) imports {wrong}: not in the table for {own}"


def test_the_table_catches_a_wrong_arrow(tmp_path):
    module = tmp_path / "x.py"
    module.write_text("def f():\n    from bot.app import store\n    from bot import github\n")
    assert _imports(module) - ALLOWED["observing"] == {"app", "github"}


PROBE = """
import importlib, sys
importlib.import_module(sys.argv[1])
edges = tuple(sys.argv[2:])
inside = tuple(e + "." for e in edges)
print(",".join(sorted(m for m in sys.modules if m in edges or m.startswith(inside))))
"""
EDGE_MODULES = (*THIRD_PARTY_EDGES, "bot.app", "bot.github", "bot.actions", "bot.cli")


@pytest.mark.parametrize("package", sorted(ENGINE))
def test_an_engine_package_loads_no_edge(package):
    """The table says what a module names; this says what loading it really drags in."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, f"bot.{package}", *EDGE_MODULES],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "", f"bot.{package} pulls in {proc.stdout.strip()}"


def test_the_probe_sees_an_edge():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "bot.app.webhook", *EDGE_MODULES],
        capture_output=True,
        text=True,
    )
    assert "fastapi" in proc.stdout
