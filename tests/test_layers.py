"""The engine never imports the edges: FastAPI, PyGithub, or the modules built on them."""

from __future__ import annotations

import subprocess
import sys

import pytest

ENGINE = [
    "bot.pipeline",
    "bot.policy",
    "bot.sandbox.local",
    "bot.migrations",
    "bot.schema",
    "bot.ddl",
    "bot.sqllog",
    "bot.locks",
    "bot.scenario",
    "bot.lint",
    "bot.risk",
    "bot.decision",
    "bot.verdict",
    "bot.report",
    "bot.events",
    "bot.rollback",
]
EDGES = ("fastapi", "github", "bot.webhook", "bot.service", "bot.github", "bot.cli", "bot.server")

PROBE = """
import importlib, sys
importlib.import_module(sys.argv[1])
edges = tuple(sys.argv[2:])
inside = tuple(e + "." for e in edges)
print(",".join(sorted(m for m in sys.modules if m in edges or m.startswith(inside))))
"""


@pytest.mark.parametrize("module", ENGINE)
def test_engine_module_imports_no_edge(module):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, module, *EDGES], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "", f"{module} pulls in {proc.stdout.strip()}"


def test_the_probe_sees_an_edge():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "bot.webhook", *EDGES], capture_output=True, text=True
    )
    assert "fastapi" in proc.stdout
