"""`migrations.tool: alembic` end to end: a real Alembic project in a real git repository,
validated by the CLI against real PostgreSQL. The project reads its database from the
sandbox's parts (DB_HOST …), seeds a row, and each builder branch is one way a versioned
change goes right or wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.engine.test_validate import branch, criterion, validate
from tests.helpers import commit, git

pytestmark = pytest.mark.timeout(300)

POLICY = f"""\
version: 1
migrations: {{tool: alembic, python: {sys.executable}}}
seed: {{sql: [seed.sql]}}
timeouts: {{lock_timeout: 1s, statement_timeout: 20s}}
tables: {{account: {{rows: 1000}}}}
suites: [checks]
"""
CHECK = """\
id: schema
title: The seeded account is there
steps:
  - id: seeded
    sql: {query: "SELECT count(*) AS n FROM account"}
    expect: {values: {n: 1}}
"""
ENV_PY = """\
import os

from alembic import context
from sqlalchemy import create_engine

from models import metadata

url = "postgresql+psycopg://{DB_USER}:{DB_PASSWORD}@{DB_HOST}:{DB_PORT}/{DB_NAME}".format(
    **os.environ
)
with create_engine(url).connect() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
"""
INI = """\
[alembic]
script_location = alembic
prepend_sys_path = .
"""
MODELS = """\
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
account = Table(
    "account",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),{extra}
)
"""
FIRST = """\
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade():
    op.create_table(
        "account",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )


def downgrade():
    op.drop_table("account")
"""


def revision(rid: str, down: str, upgrade: str, downgrade: str) -> str:
    return (
        f'from alembic import op\nimport sqlalchemy as sa\n\nrevision = "{rid}"\n'
        f'down_revision = "{down}"\n\n\ndef upgrade():\n    {upgrade}\n\n\n'
        f"def downgrade():\n    {downgrade}\n"
    )


EMAIL = 'op.add_column("account", sa.Column("email", sa.String(200), nullable=True))'
DROP_EMAIL = 'op.drop_column("account", "email")'
EMAIL_MODEL = '\n    Column("email", String(200), nullable=True),'


def main_branch(root: Path, seed: str) -> Path:
    """`root`/repo: main with the policy, the check, the first revision and `seed`."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(
        repo,
        {
            ".github/gatekeeper.yml": POLICY,
            ".github/checks/schema.yml": CHECK,
            "alembic.ini": INI,
            "alembic/env.py": ENV_PY,
            "alembic/versions/0001_account.py": FIRST,
            "models.py": MODELS.format(extra=""),
            "seed.sql": seed,
        },
        "main: accounts",
    )
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alembic")
    repo = main_branch(root, "INSERT INTO account (name) VALUES ('first admin');\n")
    branch(
        repo,
        "builder/email",
        {
            "alembic/versions/0002_email.py": revision("0002", "0001", EMAIL, DROP_EMAIL),
            "models.py": MODELS.format(extra=EMAIL_MODEL),
        },
    )
    branch(
        repo,
        "builder/no-revision",
        {"models.py": MODELS.format(extra=EMAIL_MODEL)},
    )
    branch(
        repo,
        "builder/two-heads",
        {
            "alembic/versions/0002_email.py": revision("0002", "0001", EMAIL, DROP_EMAIL),
            "alembic/versions/0003_note.py": revision(
                "0003",
                "0001",
                'op.add_column("account", sa.Column("note", sa.Text))',
                'op.drop_column("account", "note")',
            ),
        },
    )
    branch(
        repo,
        "builder/bad-downgrade",
        {
            "alembic/versions/0002_email.py": revision(
                "0002", "0001", EMAIL, 'op.drop_column("account", "mail")'
            ),
            "models.py": MODELS.format(extra=EMAIL_MODEL),
        },
    )
    branch(
        repo,
        "builder/required",
        {
            "alembic/versions/0002_email.py": revision(
                "0002",
                "0001",
                'op.add_column("account", sa.Column("email", sa.String(200), nullable=False))',
                DROP_EMAIL,
            ),
            "models.py": MODELS.format(extra='\n    Column("email", String(200), nullable=False),'),
        },
    )
    return repo


def test_an_additive_revision_is_approved_with_statements_on_its_file(repo):
    proc, verdict = validate(repo, "builder/email")
    assert proc.returncode == 0, verdict["reasons"]
    assert criterion(verdict, "migrate.heads")["status"] == "passed"
    assert criterion(verdict, "migrate.models")["status"] == "passed"
    assert criterion(verdict, "migrate.downgrade")["status"] == "passed"
    assert criterion(verdict, "schema/seeded")["status"] == "passed"
    applied = criterion(verdict, "migrate.apply")["evidence"]
    assert "alembic/versions/0002_email.py (revision 0002)" in applied
    introduced = verdict["evidence"]["migration"]["introduced_sql"]
    assert [s["file"] for s in introduced] == ["alembic/versions/0002_email.py"]
    assert "ADD COLUMN email" in introduced[0]["sql"]
    # Alembic never runs a revision twice: no "fails when it runs again" claims.
    assert not [f for f in verdict["findings"] if f["rule"] == "prefer-robust-stmts"]


def test_a_model_change_without_a_revision_is_rejected_with_the_difference(repo):
    proc, verdict = validate(repo, "builder/no-revision")
    assert proc.returncode == 1
    models = criterion(verdict, "migrate.models")
    assert models["status"] == "failed"
    assert "email" in models["evidence"]


def test_two_heads_after_the_merge_are_rejected_naming_both(repo):
    proc, verdict = validate(repo, "builder/two-heads")
    assert proc.returncode == 1
    heads = criterion(verdict, "migrate.heads")
    assert heads["status"] == "failed"
    assert "0002_email.py" in heads["evidence"] and "0003_note.py" in heads["evidence"]


def test_a_revision_that_rewrites_its_parent_at_import_cannot_hide_a_second_head(repo):
    """The graph is read from the files' text; 0003 says its parent is 0002 but makes it 0001
    when imported: two heads, which Alembic's record after the upgrade shows."""
    hidden = revision(
        "0003",
        "0002",
        'op.add_column("account", sa.Column("note", sa.Text))',
        'op.drop_column("account", "note")',
    ).replace(
        'down_revision = "0002"\n', 'down_revision = "0002"\nglobals()["down_revision"] = "0001"\n'
    )
    branch(
        repo,
        "builder/hidden-head",
        {
            "alembic/versions/0002_email.py": revision("0002", "0001", EMAIL, DROP_EMAIL),
            "alembic/versions/0003_note.py": hidden,
            "models.py": MODELS.format(extra=EMAIL_MODEL),
        },
    )
    proc, verdict = validate(repo, "builder/hidden-head")
    assert proc.returncode == 1
    applied = criterion(verdict, "migrate.apply")
    assert applied["status"] == "failed"
    assert "Alembic recorded 0002, 0003 as applied" in applied["evidence"]
    assert "declare the head(s) 0003" in applied["evidence"]


def test_a_downgrade_that_fails_asks_for_review_with_its_error(repo):
    proc, verdict = validate(repo, "builder/bad-downgrade")
    downgrade = criterion(verdict, "migrate.downgrade")
    assert downgrade["status"] == "failed"
    assert "mail" in downgrade["evidence"]
    assert not downgrade["required"]
    assert verdict["decision"] == "review", verdict["summary"]
    assert proc.returncode == 3


def test_a_required_column_without_default_fails_on_the_seeded_rows(repo):
    proc, verdict = validate(repo, "builder/required")
    assert proc.returncode == 1
    assert criterion(verdict, "migrate.apply")["status"] == "failed"
    assert "contains null values" in criterion(verdict, "migrate.apply")["evidence"]


def test_a_seed_that_fails_is_an_error_of_the_base(tmp_path):
    repo = main_branch(tmp_path, "INSERT INTO account (nom) VALUES ('x');\n")
    branch(repo, "builder/x", {"README": "x\n"})
    proc, verdict = validate(repo, "builder/x")
    assert proc.returncode == 2
    assert "seed" in verdict["summary"] and "nom" in verdict["summary"]
