"""The migration corpus (tests/data/migrations/) as a regression test of the whole linter.

Every file lints without an exception or a syntax error, reports exactly the rule ids that
expected.yml lists for it, and each rule has an unsafe file that it flags and a safe file that
it leaves alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.judging.lint import RULES, LintOptions, lint_sql

CORPUS = Path(__file__).resolve().parents[2] / "data" / "migrations"
FILES = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.sql"))
EXPECTED: dict[str, list[str]] = yaml.safe_load((CORPUS / "expected.yml").read_text())


def _options(sql: str) -> dict[str, Any]:
    """The file's `-- lint-options: key=value, ...` line (values are JSON)."""
    match = re.search(r"^--\s*lint-options:(.*)$", sql, re.M)
    options: dict[str, Any] = {}
    for pair in match.group(1).split(",") if match else []:
        key, _, value = pair.strip().partition("=")
        options[key.strip()] = json.loads(value.strip())
    return options


def _rules(path: str) -> list[str]:
    sql = (CORPUS / path).read_text()
    result = lint_sql(sql, file=path, options=LintOptions(**_options(sql)))
    assert result.errors == [], f"{path}: {result.errors}"
    return sorted({f.rule for f in result.findings})


def test_corpus_has_at_least_60_files() -> None:
    assert len(FILES) >= 60


def test_expected_lists_every_corpus_file_and_nothing_else() -> None:
    assert sorted(EXPECTED) == FILES


@pytest.mark.parametrize("path", FILES)
def test_findings_match_expected(path: str) -> None:
    assert _rules(path) == sorted(set(EXPECTED[path] or []))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_flags_its_unsafe_file_and_not_its_safe_one(rule: str) -> None:
    assert rule in _rules(f"unsafe/{rule}.sql")
    assert rule not in _rules(f"safe/{rule}.sql")


def test_safe_and_unsafe_files_are_named_after_rules() -> None:
    named = {Path(p).stem for p in FILES if p.startswith(("safe/", "unsafe/"))}
    assert named == set(RULES)


def test_readme_explanations_name_corpus_files() -> None:
    """bench/lint_compare.py reads these tables: a renamed file must not orphan its reason."""
    readme = (CORPUS / "README.md").read_text()
    begin, end = "<!-- squawk-explained:begin -->", "<!-- squawk-explained:end -->"
    block = readme[readme.index(begin) : readme.index(end)]
    patterns = [
        name
        for line in block.splitlines()[2:]
        if line.startswith("|")
        for name in re.findall(r"`([^`]+)`", line.split("|")[2])
    ]
    assert patterns
    for pattern in patterns:
        assert pattern == "*" or pattern in FILES, pattern
