"""The demo repository: its branches say what their cases say, and it builds the same everywhere.

Gatekeeper's end-to-end tests and the demo itself refer to these branches and expect each one
to fail (or pass) for its own reason only, so each diff is pinned here line by line.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load_build_demo() -> ModuleType:
    if "build_demo" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_demo", EXAMPLES / "build_demo.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_demo"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["build_demo"]


build_demo = _load_build_demo()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    repo = tmp_path_factory.mktemp("demo") / "repo"
    return repo, build_demo.build(repo)


def _case(cases: list, name: str):
    return next(case for case in cases if case.name == name)


def test_every_case_has_its_branch_and_the_refs_resolve(demo: tuple[Path, list]) -> None:
    repo, cases = demo
    branches = set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split())
    assert branches == {"main"} | {case.head for case in cases}
    assert [case.name for case in cases] == [
        "fix",
        "no-fix",
        "non-idempotent",
        "destructive",
        "regression",
    ]
    for case in cases:
        assert case.base == "main"
        assert case.head.startswith("builder/")
        git(repo, "rev-parse", "--verify", f"{case.head}^{{commit}}")
        # One builder commit straight on top of main: the diff is the builder's change only.
        assert git(repo, "rev-list", f"{case.base}..{case.head}").count("\n") == 1
        assert git(repo, "merge-base", case.base, case.head) == git(repo, "rev-parse", "main")
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(repo, "status", "--porcelain") == ""


def test_build_is_deterministic(tmp_path: Path) -> None:
    refs = []
    for name in ("one", "two"):
        build_demo.build(tmp_path / name)
        refs.append(git(tmp_path / name, "for-each-ref", "--format=%(objectname) %(refname)"))
    assert refs[0] == refs[1]


def test_main_tells_the_story_of_the_earlier_fixes(demo: tuple[Path, list]) -> None:
    repo, _ = demo
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "fix(db): P1-SCHEMA-001 - add cluster_id columns",
        "fix(db): P1-DATABASE-001 - scan template tags as TEXT[]",
        "feat: sessions API with template catalog, agents and JWT auth",
    ]
    first = git(repo, "show", "main~2:app/templates.py")
    assert 'tags::text AS tags"' in first
    assert "ADD COLUMN cluster_id" not in git(repo, "show", "main~2:app/db.py")


def test_main_is_the_examples_tree_with_the_tags_bug(demo: tuple[Path, list]) -> None:
    repo, _ = demo
    for path in git(repo, "ls-tree", "-r", "--name-only", "main").split():
        assert git(repo, "show", f"main:{path}") == (EXAMPLES / "sessions-api" / path).read_text()
    db_py = git(repo, "show", "main:app/db.py")
    assert "ADD COLUMN tags" not in db_py
    assert "tags)" in git(repo, "show", "main:app/sessions.py")  # INSERT ... (..., tags)


# case -> (files changed, text in added lines, text in no added line, lines removed)
DIFFS: dict[str, tuple[set[str], list[str], list[str], int]] = {
    "fix": (
        {"app/db.py"},
        [
            "IF NOT EXISTS (SELECT 1 FROM information_schema.columns",
            "WHERE table_name='sessions' AND column_name='tags') THEN",
            "ALTER TABLE sessions ADD COLUMN tags TEXT[];",
            "CREATE INDEX IF NOT EXISTS idx_sessions_tags ON sessions USING GIN(tags);",
        ],
        ["DROP"],
        0,
    ),
    "no-fix": ({"app/sessions.py"}, ["log.info("], ["ALTER", "tags"], 0),
    "non-idempotent": (
        {"app/db.py"},
        ['"ALTER TABLE sessions ADD COLUMN tags TEXT[];"'],
        ["IF NOT EXISTS", "GIN", "DROP"],
        0,
    ),
    "destructive": (
        {"app/db.py"},
        [
            "ALTER TABLE sessions ADD COLUMN tags TEXT[];",
            "USING GIN(tags)",
            '"ALTER TABLE sessions DROP COLUMN IF EXISTS cluster_id;"',
        ],
        [],
        0,
    ),
    "regression": (
        {"app/db.py", "app/main.py", "app/templates.py"},
        [
            "ALTER TABLE sessions ADD COLUMN tags TEXT[];",
            "USING GIN(tags)",
            "t.tags::text AS tags",
            'row["tags"] = json.loads(row["tags"])',
            "templates.get_template_detail(conn, name)",
        ],
        ["DROP"],
        1,
    ),
}


@pytest.mark.parametrize("name", DIFFS)
def test_each_branch_changes_what_its_case_says(demo: tuple[Path, list], name: str) -> None:
    repo, cases = demo
    case = _case(cases, name)
    files, present, absent, removed_count = DIFFS[name]
    assert set(git(repo, "diff", "--name-only", case.base, case.head).split()) == files
    diff = git(repo, "diff", "-U0", case.base, case.head).splitlines()
    added = "\n".join(line[1:] for line in diff if line.startswith("+") and line[:3] != "+++")
    removed = [line for line in diff if line.startswith("-") and line[:3] != "---"]
    for text in present:
        assert text in added
    for text in absent:
        assert text not in added
    assert len(removed) == removed_count


def test_destructive_branch_drops_a_column_the_code_still_uses(demo: tuple[Path, list]) -> None:
    repo, cases = demo
    head = _case(cases, "destructive").head
    assert "cluster_id" in git(repo, "show", f"{head}:app/sessions.py")


def test_cases_state_their_expectations(demo: tuple[Path, list]) -> None:
    _, cases = demo
    expected = {case.name: (case.expected_decision, case.bug_id) for case in cases}
    assert expected == {
        "fix": ("approve", "P1-SCHEMA-002"),
        "no-fix": ("reject", "P1-SCHEMA-002"),
        "non-idempotent": ("reject", "P1-SCHEMA-002"),
        "destructive": ("reject", "P1-SCHEMA-003"),
        "regression": ("reject", "P1-API-004"),
    }
    assert _case(cases, "fix").expected_risk == {"low"}
    assert _case(cases, "destructive").expected_risk == {"high", "critical"}
    assert "P1-DATABASE-001" in _case(cases, "regression").evidence


def test_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_demo.build(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_script_builds_and_prints_the_cases(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "build_demo.py"), str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        check=True,
    )
    sha = git(tmp_path / "repo", "rev-parse", "--short", "builder/P1-SCHEMA-002").strip()
    assert f"builder/P1-SCHEMA-002        {sha}  expect approve (risk low)" in result.stdout
    assert result.stdout.count("expect reject") == 4
