"""The revision graph read from the files' text (`read_graph`), against Alembic's own reader:
the same graph where the files are plain, and None — Alembic asked — where they are not."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from bot.migrating.versioned import Alembic, Graph, read_graph
from bot.policy.model import Migrations

ITEMS_API = Path(__file__).resolve().parents[2] / "examples" / "items-api"
INI = "[alembic]\nscript_location = %(here)s/migrations\n"


def _revision(rid: str, down: str, *, annotated: bool = False) -> str:
    if annotated:
        return (
            "from typing import Sequence, Union\n"
            f"revision: str = {rid!r}\n"
            f"down_revision: Union[str, Sequence[str], None] = {down}\n"
        )
    return f'"""{rid}"""\nimport sqlalchemy as sa\nrevision = {rid!r}\ndown_revision = {down}\n'


def _project(root: Path, files: dict[str, str], ini: str = INI) -> Path:
    (root / "alembic.ini").write_text(ini)
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    for name, text in files.items():
        (versions / name).write_text(text)
    return root


def _by_alembic(project: Path) -> Graph:
    settings = Migrations(tool="alembic", python=sys.executable)
    return Alembic(settings, {}, time.monotonic() + 60, ())._read_by_alembic(project)


def _same(a: Graph, b: Graph) -> None:
    assert sorted(a.heads) == sorted(b.heads)
    assert a.revisions == b.revisions


def test_the_items_api_example_reads_as_alembic_reads_it():
    static = read_graph(ITEMS_API, "alembic.ini", ITEMS_API)
    assert static is not None and static.heads == ("f9d47a1c0e82",)
    _same(static, _by_alembic(ITEMS_API))


def test_branches_merges_and_annotated_ids_read_as_alembic_reads_them(tmp_path):
    project = _project(
        tmp_path,
        {
            "a_base.py": _revision("a1", "None"),
            "b_left.py": _revision("b2", "'a1'", annotated=True),
            "c_right.py": _revision("c3", "('a1',)"),
            "d_merge.py": _revision("d4", "('b2', 'c3')"),
            "e_other_head.py": _revision("e5", "'a1'"),
            "__init__.py": "",
            "notes.txt": "not a revision",
        },
    )
    static = read_graph(project, "alembic.ini", project)
    assert static is not None
    assert static.heads == ("d4", "e5")
    assert static.revisions["d4"].down == ("b2", "c3")
    assert static.revisions["a1"].path == "migrations/versions/a_base.py"
    _same(static, _by_alembic(project))


@pytest.mark.parametrize(
    ("files", "ini"),
    [
        ({"a.py": "import uuid\nrevision = uuid.uuid4().hex\ndown_revision = None\n"}, INI),
        ({"a.py": "down_revision = None\n"}, INI),
        ({"a.py": "revision = 'a1'\n"}, INI),
        ({"a.py": "revision = 'a1'\ndown_revision = 'missing'\n"}, INI),
        ({"a.py": "revision = 'a1'\ndown_revision = None\ndef (:\n"}, INI),
        ({"a.py": _revision("a1", "None")}, "[alembic]\nscript_location = mypackage:migrations\n"),
        ({"a.py": _revision("a1", "None")}, INI + "version_locations = %(here)s/other\n"),
        ({"a.py": _revision("a1", "None")}, "[alembic]\nsqlalchemy.url = x\n"),
    ],
    ids=[
        "computed id",
        "no revision",
        "no down_revision",
        "unknown parent",
        "syntax error",
        "package resource",
        "other version locations",
        "no script_location",
    ],
)
def test_what_it_does_not_follow_goes_to_alembic(tmp_path, files, ini):
    project = _project(tmp_path, files, ini)
    assert read_graph(project, "alembic.ini", project) is None


def test_a_pyproject_alembic_section_goes_to_alembic(tmp_path):
    project = _project(tmp_path, {"a.py": _revision("a1", "None")})
    (project / "pyproject.toml").write_text("[tool.alembic]\nscript_location = 'other'\n")
    assert read_graph(project, "alembic.ini", project) is None


def test_a_revision_file_that_is_a_link_goes_to_alembic(tmp_path):
    """The gate reads these files unconfined: a link (to a host file, say) is left to
    Alembic's reader, which runs confined as the run's account."""
    project = _project(tmp_path, {"a.py": _revision("a1", "None")})
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text(_revision("b2", "'a1'"))
    (project / "migrations" / "versions" / "b.py").symlink_to(outside)
    assert read_graph(project, "alembic.ini", project) is None
    (project / "migrations" / "versions" / "b.py").unlink()
    assert read_graph(project, "alembic.ini", project) is not None
    (project / "alembic.ini").rename(project / "real.ini")
    (project / "alembic.ini").symlink_to(project / "real.ini")
    assert read_graph(project, "alembic.ini", project) is None
