"""The items-api repository: its history, its branches, and the service really running.

`gatekeeper demo` judges these branches against expectations written before the gate
existed, so each branch must be broken (or healthy) for its own reason only. The fast tests
pin the git side; the slow ones build the service's virtualenv from this machine's pip
configuration, run Alembic, the seed script and uvicorn against a real PostgreSQL, and show
each case does at the Alembic level what its case says.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import psycopg
import pytest

from bot.sandbox.postgres import APP_ROLE
from tests.helpers import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APP = EXAMPLES / "items-api"
MAIN_HEAD = "f9d47a1c0e82"
ADMIN = ("admin@example.com", "sandbox-admin-password")
_ADDRESS = ("--host", "127.0.0.1", "--port")


def _load_build_items() -> ModuleType:
    if "build_items" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_items", EXAMPLES / "build_items.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_items"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["build_items"]


build_items = _load_build_items()
CASES = {case.name: case for case in build_items.CASES}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("items") / "repo"
    build_items.build(path)
    return path


# --------------------------------------------------------------------------- the repository


def test_every_case_has_its_branch(repo: Path) -> None:
    branches = set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split())
    assert branches == {"main"} | {case.head for case in CASES.values()}
    for case in CASES.values():
        assert case.base == "main"
        assert case.head == f"builder/{case.bug_id}"
        assert case.why and "\n" not in case.why
        # One builder commit on top of its start: the diff is the builder's change only.
        start = "main~2" if case.name == "two-heads" else "main"
        assert git(repo, "rev-list", f"{start}..{case.head}").count("\n") == 1
        assert git(repo, "merge-base", "main", case.head) == git(repo, "rev-parse", start)
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(repo, "status", "--porcelain") == ""


def test_cases_state_their_expectations() -> None:
    expected = {name: case.expected_decision for name, case in CASES.items()}
    assert expected == {
        "additive-column": "approve",
        "type-widening": "approve",
        "careful-foreign-key": "approve",
        "backfill": "approve",
        "new-dependency": "approve",
        "model-without-revision": "reject",
        "required-column": "reject",
        "delete-not-deleting": "reject",
        "dropped-column": "reject",
        "downgrade-fails": "review",
        "two-heads": "reject",
    }
    assert CASES["additive-column"].expected_risk == {"low"}
    assert CASES["dropped-column"].expected_risk == {"high", "critical"}


def test_main_has_one_commit_per_revision_then_adopts_gatekeeper(repo: Path) -> None:
    log = git(repo, "log", "--reverse", "--format=%H %s", "main").splitlines()
    assert len(log) == 7
    added_revisions = []
    for line in log[:6]:
        sha = line.split()[0]
        added = git(repo, "show", "--diff-filter=A", "--name-only", "--format=", sha).split()
        revisions = [path for path in added if path.startswith("alembic/versions/")]
        assert len(revisions) == 1, line
        added_revisions.append(Path(revisions[0]).name.split("_")[0])
    assert added_revisions == [
        "1a7c3e9b2f40",
        "5d2e8f1a6b73",
        "8b4f0c2d9e15",
        "c3a91e7f4d28",
        "e6f20b8a3c51",
        MAIN_HEAD,
    ]
    adopt = git(repo, "show", "--name-only", "--format=", "main").split()
    assert ".github/gatekeeper.yml" in adopt
    assert "ITEMS-104" in log[2] and "ITEMS-109" in log[3]
    # The first commit has users only: no item model, route or revision yet.
    assert "class Item" not in git(repo, "show", "main~6:app/models.py")
    assert "items.router" not in git(repo, "show", "main~6:app/main.py")


def test_main_is_the_examples_tree(repo: Path) -> None:
    paths = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert ".github/gatekeeper/checks/lifecycle.yml" in paths
    for path in paths:
        assert git(repo, "show", f"main:{path}") == (APP / path).read_text(), path


def test_build_is_deterministic(tmp_path: Path) -> None:
    refs = []
    for name in ("one", "two"):
        build_items.build(tmp_path / name)
        refs.append(git(tmp_path / name, "for-each-ref", "--format=%(objectname) %(refname)"))
    assert refs[0] == refs[1]


# case -> (files changed, text in added lines, text in no added line)
DIFFS: dict[str, tuple[set[str], list[str], list[str]]] = {
    "additive-column": (
        {
            "alembic/versions/2b8e5c71d0a4_add_item_due_date.py",
            "app/models.py",
            "app/routes/items.py",
        },
        ['op.add_column("item", sa.Column("due_date", sa.Date(), nullable=True))'],
        ["nullable=False", "server_default"],
    ),
    "type-widening": (
        {
            "alembic/versions/4c0d9a3e7b12_widen_user_full_name_to_255_characters.py",
            "app/models.py",
            "app/routes/users.py",
        },
        ["type_=sa.String(length=255)", "mapped_column(String(255))", "max_length=255"],
        ["drop_column"],
    ),
    "careful-foreign-key": (
        {
            "alembic/versions/6e1f2a8b9c30_item_assignee_id_references_user_not.py",
            "alembic/versions/7a3b4c5d6e71_validate_item_assignee_id_s_foreign_key.py",
            "app/models.py",
        },
        ["NOT VALID", "VALIDATE CONSTRAINT item_assignee_id_fkey", 'ondelete="SET NULL"'],
        [],
    ),
    "backfill": (
        {
            "alembic/versions/8d5e6f7a8b92_backfill_user_full_name_from_the_email.py",
            "app/initial_data.py",
        },
        ['UPDATE \\"user\\" SET full_name', "WHERE full_name IS NULL"],
        ["add_column", "alter_column"],
    ),
    "new-dependency": (
        {"requirements.txt", "app/routes/users.py"},
        ["email-validator>=2.0", "EmailStr"],
        ["op."],
    ),
    "model-without-revision": (
        {"app/models.py", "app/routes/items.py"},
        ["mapped_column(String(255), index=True)", "Item.title.ilike"],
        ["op."],
    ),
    "required-column": (
        {
            "alembic/versions/9e7f8a1b2c03_add_user_timezone.py",
            "app/models.py",
            "app/routes/users.py",
            "app/initial_data.py",
        },
        ['sa.Column("timezone", sa.String(length=64), nullable=False)'],
        ["server_default"],
    ),
    "delete-not-deleting": (
        {"app/crud.py", "app/routes/items.py"},
        ["session.delete(item)\n    session.flush()", "crud.delete_item(session, item)"],
        [],
    ),
    "dropped-column": (
        {"alembic/versions/a0b1c2d3e4f5_drop_item_assignee_id.py"},
        ['op.drop_column("item", "assignee_id")'],
        [],
    ),
    "downgrade-fails": (
        {
            "alembic/versions/b2c3d4e5f6a7_add_user_username.py",
            "app/models.py",
            "app/routes/users.py",
        },
        ['op.create_unique_constraint(None, "user"', 'op.drop_constraint(None, "user"'],
        [],
    ),
    "two-heads": (
        {
            "alembic/versions/c4d5e6f7a8b9_add_item_archived_at.py",
            "app/models.py",
            "app/routes/items.py",
        },
        ['down_revision: str | Sequence[str] | None = "e6f20b8a3c51"'],
        [],
    ),
}


@pytest.mark.parametrize("name", DIFFS)
def test_each_branch_changes_what_its_case_says(repo: Path, name: str) -> None:
    case = CASES[name]
    files, present, absent = DIFFS[name]
    # Three dots: the builder's own change, from where the branch started.
    assert set(git(repo, "diff", "--name-only", f"main...{case.head}").split()) == files
    diff = git(repo, "diff", "-U0", f"main...{case.head}").splitlines()
    added = "\n".join(line[1:] for line in diff if line.startswith("+") and line[:3] != "+++")
    for text in present:
        assert text in added
    for text in absent:
        assert text not in added


def test_only_the_dependency_case_changes_requirements(repo: Path) -> None:
    main = git(repo, "show", "main:requirements.txt")
    for case in CASES.values():
        head = git(repo, "show", f"{case.head}:requirements.txt")
        assert (head != main) == (case.name == "new-dependency")


def test_two_heads_merges_cleanly_into_two_heads(repo: Path) -> None:
    """Git sees no conflict: only Alembic's graph shows the problem."""
    merged = _merge_commit(repo, CASES["two-heads"].head)
    downs = {}
    for path in git(repo, "ls-tree", "--name-only", merged, "alembic/versions/").split():
        text = git(repo, "show", f"{merged}:{path}")
        revision = text.split('revision: str = "')[1].split('"')[0]
        downs[revision] = text.split("down_revision: str | Sequence[str] | None = ")[1].split()[0]
    assert len(downs) == 7
    assert [r for r, down in downs.items() if down == '"e6f20b8a3c51"'] == sorted(
        ["c4d5e6f7a8b9", MAIN_HEAD]
    )


def test_script_builds_and_prints_the_cases(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "build_items.py"), str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        check=True,
    )
    sha = git(tmp_path / "repo", "rev-parse", "--short", "builder/ITEMS-210").strip()
    assert f"builder/ITEMS-210  {sha}  expect review (risk any)" in result.stdout
    assert result.stdout.count("expect approve") == 5
    assert result.stdout.count("expect reject") == 5


def _merge_commit(repo: Path, head: str) -> str:
    """The merge result as the gate builds it: `git merge-tree`, committed without a work tree."""
    tree = git(repo, "merge-tree", "--write-tree", "main", head).split()[0]
    identity = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t.invalid",
    }
    return subprocess.run(
        ["git", "commit-tree", tree, "-p", "main", "-p", head, "-m", f"merge {head}"],
        cwd=repo,
        env={**os.environ, **identity},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# --------------------------------------------------------------------------- the service, run


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main's requirements.txt installed once, from this machine's pip configuration."""
    path = tmp_path_factory.mktemp("items-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    install = subprocess.run(
        [
            str(path / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-r",
            str(APP / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if install.returncode != 0:
        pytest.skip(f"cannot install items-api's requirements here: {install.stderr[-500:]}")
    return path


@pytest.fixture(scope="module")
def checkout(repo: Path) -> Callable[[str], Path]:
    """The work tree of a case's merge result (or of main), made once per module."""
    trees: dict[str, Path] = {}

    def get(head: str) -> Path:
        if head not in trees:
            tree = repo.parent / "trees" / head.replace("/", "_")
            commit = "main" if head == "main" else _merge_commit(repo, head)
            git(repo, "worktree", "add", "-q", "--detach", str(tree), commit)
            trees[head] = tree
        return trees[head]

    return get


@pytest.fixture
def env(pg_sandbox: Any) -> Iterator[dict[str, str]]:
    """A fresh database per test, handed over as the policy does: separate POSTGRES_* parts."""
    name = f"items_{uuid.uuid4().hex[:12]}"
    pg_sandbox.psql(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
    url = urlsplit(pg_sandbox.app_database_url)
    yield {
        **os.environ,
        "POSTGRES_SERVER": url.hostname or "",
        "POSTGRES_PORT": str(url.port),
        "POSTGRES_USER": unquote(url.username or ""),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_DB": name,
        "SECRET_KEY": "test-signing-key-0123456789abcdef0123456789",
        "FIRST_SUPERUSER": ADMIN[0],
        "FIRST_SUPERUSER_PASSWORD": ADMIN[1],
    }
    pg_sandbox.psql(f"DROP DATABASE {name} WITH (FORCE)")


def _run(venv: Path, workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin/python"), "-m", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _query(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    conninfo = {
        "host": env["POSTGRES_SERVER"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"],
        "dbname": env["POSTGRES_DB"],
    }
    with psycopg.connect(**conninfo) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def serve(tmp_path: Path, venv: Path) -> Iterator[Callable[[Path, dict[str, str]], str]]:
    """Start uvicorn like the policy's api.command; return its URL once the health check
    answers. Its log is kept for the test to read (`log`)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(workdir: Path, env: dict[str, str]) -> str:
        port = free_port()
        log = tmp_path / "api.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(venv / "bin/python"), "-m", "uvicorn", "app.main:app", *_ADDRESS, str(port)],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            with suppress(httpx.HTTPError):
                health = httpx.get(f"{url}/api/v1/utils/health-check", timeout=1, trust_env=False)
                if health.status_code == 200:
                    return url
            time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _login(client: httpx.Client, password: str = ADMIN[1]) -> httpx.Response:
    return client.post(
        "/api/v1/login/access-token", data={"username": ADMIN[0], "password": password}
    )


@pytest.mark.slow
def test_main_migrates_seeds_serves_and_rolls_back(
    venv: Path,
    checkout: Callable[[str], Path],
    env: dict[str, str],
    serve: Callable[[Path, dict[str, str]], str],
    tmp_path: Path,
) -> None:
    workdir = checkout("main")
    _ok(_run(venv, workdir, env, "alembic", "upgrade", "head"))
    assert "Created first superuser admin@example.com" in _ok(
        _run(venv, workdir, env, "app.initial_data")
    )
    assert "Kept the first superuser" in _ok(_run(venv, workdir, env, "app.initial_data"))
    assert _query(env, 'SELECT count(*), bool_and(is_superuser) FROM "user"') == [(1, True)]
    assert _query(env, "SELECT version_num FROM alembic_version") == [(MAIN_HEAD,)]

    url = serve(workdir, env)
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
        assert client.get("/api/v1/items/").status_code == 401
        assert _login(client, "wrong").status_code == 400
        login = _login(client)
        assert login.status_code == 200, login.text
        assert login.json()["token_type"] == "bearer"
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

        me = client.get("/api/v1/users/me").json()
        assert (me["email"], me["is_superuser"]) == (ADMIN[0], True)
        assert uuid.UUID(me["id"]) and me["last_login_at"]

        created = client.post("/api/v1/items/", json={"title": "first", "description": "d"})
        assert created.status_code == 201, created.text
        item = created.json()
        assert item["owner_id"] == me["id"] and item["assignee_id"] is None
        path = f"/api/v1/items/{item['id']}"
        assert client.get(path).json() == item
        assert [i["id"] for i in client.get("/api/v1/items/").json()["data"]] == [item["id"]]
        renamed = client.put(path, json={"title": "renamed", "assignee_id": me["id"]}).json()
        assert (renamed["title"], renamed["assignee_id"]) == ("renamed", me["id"])
        assert client.put(path, json={"assignee_id": str(uuid.uuid4())}).status_code == 422
        assert client.delete(path).json() == {"message": "Item deleted successfully"}
        assert client.get(path).status_code == 404
        assert _query(env, "SELECT count(*) FROM item") == [(0,)]
    log = (tmp_path / "api.log").read_text()
    assert f"Created item {item['id']} for {ADMIN[0]}" in log
    assert "Traceback" not in log

    assert "No new upgrade operations detected" in _ok(_run(venv, workdir, env, "alembic", "check"))
    _ok(_run(venv, workdir, env, "alembic", "downgrade", "base"))
    assert _query(env, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(1,)]
    _ok(_run(venv, workdir, env, "alembic", "upgrade", "head"))
    _ok(_run(venv, workdir, env, "alembic", "check"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry", [("alembic", "current"), ("app.initial_data",), ("uvicorn", "app.main:app")]
)
def test_an_empty_password_stops_every_entry_point(
    venv: Path, env: dict[str, str], entry: tuple[str, ...]
) -> None:
    result = _run(venv, APP, {**env, "POSTGRES_PASSWORD": ""}, *entry)
    assert result.returncode == 1
    assert "configuration error: POSTGRES_PASSWORD is not set or empty" in result.stderr
    assert "Traceback" not in result.stderr


# What `alembic upgrade head`, `alembic check` and `alembic downgrade <main's head>` do on
# each case's merge result, main migrated and seeded first: True, or text of the failure.
ALEMBIC: dict[str, tuple[bool | str, bool | str, bool | str]] = {
    "additive-column": (True, True, True),
    "type-widening": (True, True, True),
    "careful-foreign-key": (True, True, True),
    "backfill": (True, True, True),
    "new-dependency": (True, True, True),
    "model-without-revision": (True, "add_index", True),
    "required-column": ('column "timezone" of relation "user" contains null values', "", ""),
    "delete-not-deleting": (True, True, True),
    "dropped-column": (True, "assignee_id", True),
    "downgrade-fails": (True, True, "it has no name"),
    "two-heads": ("Multiple head revisions", "", ""),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ALEMBIC)
def test_each_case_migrates_as_its_case_says(
    venv: Path, checkout: Callable[[str], Path], env: dict[str, str], name: str
) -> None:
    _ok(_run(venv, checkout("main"), env, "alembic", "upgrade", "head"))
    _ok(_run(venv, checkout("main"), env, "app.initial_data"))
    workdir = checkout(CASES[name].head)
    steps = [("upgrade", "head"), ("check",), ("downgrade", MAIN_HEAD)]
    for step, expected in zip(steps, ALEMBIC[name], strict=True):
        if expected == "":
            break  # the upgrade failed: nothing after it can run
        result = _run(venv, workdir, env, "alembic", *step)
        if expected is True:
            _ok(result)
        else:
            assert result.returncode != 0, f"alembic {step} passed"
            assert expected in result.stdout + result.stderr
    if name == "backfill":
        assert _query(env, 'SELECT full_name FROM "user"') == [("admin",)]
    if name == "careful-foreign-key":
        assert _query(
            env, "SELECT count(*) FROM pg_constraint WHERE conname = 'item_assignee_id_fkey'"
        ) == [(0,)]


@pytest.mark.slow
def test_delete_that_does_not_delete_leaves_the_item(
    venv: Path,
    checkout: Callable[[str], Path],
    env: dict[str, str],
    serve: Callable[[Path, dict[str, str]], str],
) -> None:
    workdir = checkout(CASES["delete-not-deleting"].head)
    _ok(_run(venv, workdir, env, "alembic", "upgrade", "head"))
    _ok(_run(venv, workdir, env, "app.initial_data"))
    with httpx.Client(base_url=serve(workdir, env), timeout=10, trust_env=False) as client:
        client.headers["Authorization"] = f"Bearer {_login(client).json()['access_token']}"
        item = client.post("/api/v1/items/", json={"title": "keep me?"}).json()
        deleted = client.delete(f"/api/v1/items/{item['id']}")
        assert deleted.json() == {"message": "Item deleted successfully"}
        assert client.get(f"/api/v1/items/{item['id']}").status_code == 200
    assert _query(env, "SELECT title FROM item") == [("keep me?",)]


@pytest.mark.slow
def test_new_dependency_case_needs_its_own_build(
    venv: Path, checkout: Callable[[str], Path], env: dict[str, str]
) -> None:
    """With main's packages the head does not even import: the gate must build each side."""
    result = _run(venv, checkout(CASES["new-dependency"].head), env, "uvicorn", "app.main:app")
    assert result.returncode != 0
    assert "email-validator is not installed" in result.stdout + result.stderr
