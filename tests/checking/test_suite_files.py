"""The shipped check suites load, and a broken suite file is reported where it is broken."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.checking import load_suites
from bot.policy.yamlfile import ConfigError

CHECKS = Path(__file__).resolve().parents[2] / "checks"
SUITE_FILES = sorted(p for p in CHECKS.rglob("*") if p.suffix in (".yml", ".yaml"))


def test_the_repository_ships_suites() -> None:
    # Without this, an empty or moved checks/ would let the per-file test pass on no files.
    assert SUITE_FILES, f"no suite files under {CHECKS}"


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda p: str(p.relative_to(CHECKS)))
def test_suite_file_loads(path: Path) -> None:
    (suite,) = load_suites([path])
    if suite.kind == "regression":
        assert suite.bug_id, f"{path}: a regression suite names the bug it guards"


def test_suite_ids_are_unique_across_all_directories() -> None:
    directories = sorted({path.parent for path in SUITE_FILES})
    suites = load_suites(directories)
    assert len(suites) == len(SUITE_FILES)


GOOD = """\
id: {id}
title: A suite
steps:
  - id: health
    http: {{path: /healthz}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(*paths: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_suites(list(paths))
    return info.value.problems


def test_directory_loads_yml_and_yaml_sorted_by_name(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", GOOD.format(id="b"))
    write(tmp_path, "a.yaml", GOOD.format(id="a"))
    write(tmp_path, "notes.txt", "not a suite")
    assert [s.id for s in load_suites([tmp_path])] == ["a", "b"]


def test_every_broken_file_in_a_directory_is_reported_with_its_position(tmp_path: Path) -> None:
    write(tmp_path, "a-good.yml", GOOD.format(id="good"))
    bad_yaml = write(
        tmp_path,
        "b-bad-yaml.yml",
        """\
        id: broken
        title: [unclosed
        steps: []
        """,
    )
    bad_schema = write(
        tmp_path,
        "c-bad-schema.yml",
        """\
        id: typo
        title: A suite
        steps:
          - id: list
            http: {path: /items}
            expect:
              staus: 200
          - id: logs
            logs: {source: api, must_not_match: ["(unclosed"]}
        """,
    )
    found = problems(tmp_path)
    assert len(found) == 3, found
    assert found[0].startswith(f"{bad_yaml}:3:")
    assert "invalid YAML" in found[0]
    assert found[1] == (
        f"{bad_schema}:7:7: unknown key 'staus' in steps.0.expect; did you mean 'status'?"
    )
    assert found[2].startswith(f"{bad_schema}:9:42: steps.1.logs.must_not_match.0: ")
    assert "invalid regular expression '(unclosed'" in found[2]


def test_duplicate_suite_ids_name_both_files(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write(tmp_path / "one", "x.yml", GOOD.format(id="same"))
    second = write(tmp_path / "two", "y.yml", "# the same suite again\n" + GOOD.format(id="same"))
    assert problems(tmp_path / "one", tmp_path / "two") == [
        f"{second}:2:1: duplicate suite id 'same', also in {first}:1:1"
    ]


def test_duplicate_step_ids_are_a_config_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yml",
        """\
        id: s
        title: t
        steps:
          - {id: a, http: {path: /x}}
          - {id: a, http: {path: /y}}
        """,
    )
    assert problems(path) == [
        f"{path}:4:3: steps: Value error, duplicate step id 'a' (steps.0 and steps.1)"
    ]


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    assert problems(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: no such file or directory"]
