"""Build the demo target: a git repository of sessions-api with builder branches to judge.

`examples/sessions-api/` holds the API as it stands on `main`: P1-DATABASE-001 and
P1-SCHEMA-001 fixed, P1-SCHEMA-002 still open (the code reads and writes `sessions.tags`,
no migration creates it). This script replays that history as commits, then adds one
builder branch per case: the good fix and four ways a fix goes wrong. Every change is an
exact text edit, so each branch's diff against main is small and readable, and fixed
identities and dates make the SHAs the same on every machine.

    python examples/build_demo.py /tmp/demo     # builds the repository, prints the cases
"""

from __future__ import annotations

import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "sessions-api"


# examples/ is not a package: run as a script or loaded by path (`gatekeeper demo`), either
# way the shared builder module sits beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import example_repo  # noqa: E402

Branch = example_repo.Branch
Commit = example_repo.Commit
Edit = example_repo.Edit
DemoCase = example_repo.Case


def _insert_before(path: str, anchor: str, text: str) -> Edit:
    return Edit(path, anchor, text + anchor)


# Where new start-up migrations go: after the schema changes, before the seed rows.
_SEED_ANCHOR = (
    '    """\n    INSERT INTO templates (name, display_name, category, image, tags) VALUES\n'
)

_TAGS_MIGRATION = '''    # P1-SCHEMA-002: the quota check and session reads select sessions.tags.
    """
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
            WHERE table_name='sessions' AND column_name='tags') THEN
            ALTER TABLE sessions ADD COLUMN tags TEXT[];
        END IF;
    END $$;
    """,
    "CREATE INDEX IF NOT EXISTS idx_sessions_tags ON sessions USING GIN(tags);",
'''

TAGS_FIX = _insert_before("app/db.py", _SEED_ANCHOR, _TAGS_MIGRATION)

# --- main's history -------------------------------------------------------------------
# The fixes that landed before P1-SCHEMA-002. The first commit is the app with them reverted.

DATABASE_001_FIX = (
    Edit(
        "app/templates.py",
        '"""The template catalog."""\n',
        '''"""The template catalog.

`templates.tags` is TEXT[]. Selected as is, psycopg hands it over as list[str]; any detour
through text gives the client PostgreSQL's `{browser,web}` array literal instead of a JSON
array. That was P1-DATABASE-001, and its regression suite guards both read paths here.
"""
''',
    ),
    Edit(
        "app/templates.py",
        'TEMPLATE_COLUMNS = "id, name, display_name, category, image, tags::text AS tags"\n',
        'TEMPLATE_COLUMNS = "id, name, display_name, category, image, tags"\n',
    ),
)

SCHEMA_001_FIX = (
    _insert_before(
        "app/db.py",
        _SEED_ANCHOR,
        '''    # P1-SCHEMA-001: the agent code routes sessions by cluster.
    """
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
            WHERE table_name='agents' AND column_name='cluster_id') THEN
            ALTER TABLE agents ADD COLUMN cluster_id TEXT;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
            WHERE table_name='agents' AND column_name='cluster_name') THEN
            ALTER TABLE agents ADD COLUMN cluster_name TEXT;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
            WHERE table_name='sessions' AND column_name='cluster_id') THEN
            ALTER TABLE sessions ADD COLUMN cluster_id TEXT;
        END IF;
    END $$;
    """,
''',
    ),
    Edit(
        "app/db.py",
        '    ON CONFLICT (id) DO NOTHING\n    """,\n]\n',
        """    ON CONFLICT (id) DO NOTHING
    \"\"\",
    \"\"\"
    UPDATE agents SET cluster_id = 'prod-us-east-1', cluster_name = 'Production US East'
    WHERE id = 'k8s-prod-cluster' AND cluster_id IS NULL
    \"\"\",
]
""",
    ),
)

INITIAL_MESSAGE = "feat: sessions API with template catalog, agents and JWT auth"
MAIN_FIXES = (
    Commit(
        "fix(db): P1-DATABASE-001 - scan template tags as TEXT[]",
        "2025-11-22T03:01:00+00:00",
        DATABASE_001_FIX,
    ),
    Commit(
        "fix(db): P1-SCHEMA-001 - add cluster_id columns",
        "2025-11-22T03:40:00+00:00",
        SCHEMA_001_FIX,
    ),
)
INITIAL_DATE = "2025-11-20T09:00:00+00:00"

# --- builder branches -----------------------------------------------------------------

_TEMPLATE_DETAIL = '''

class ScanError(Exception):
    """A column's value could not be read into its Python type."""


def get_template_detail(conn: Connection, name: str) -> dict[str, Any] | None:
    """The template and its active session count, in one query for the detail page."""
    row = conn.execute(
        """
        SELECT t.id, t.name, t.display_name, t.category, t.image, t.tags::text AS tags,
               count(s.id) AS active_sessions
        FROM templates t
        LEFT JOIN sessions s ON s.template = t.name AND s.state IN ('pending', 'running')
        WHERE t.name = %s
        GROUP BY t.id
        """,
        (name,),
    ).fetchone()
    if row is None:
        return None
    try:
        row["tags"] = json.loads(row["tags"])
    except ValueError as exc:
        raise ScanError(f'Scan error on column "tags": {exc}') from None
    return row
'''

_GET_TEMPLATE_TAIL = (
    '        log.info("Fetched template %s from database (ID: %d)", row["name"], row["id"])\n'
    "    return row\n"
)

TEMPLATE_DETAIL_REFACTOR = (
    Edit("app/templates.py", "from typing import Any\n", "import json\nfrom typing import Any\n"),
    Edit("app/templates.py", _GET_TEMPLATE_TAIL, _GET_TEMPLATE_TAIL + _TEMPLATE_DETAIL),
    Edit(
        "app/main.py",
        "        template = templates.get_template(conn, name)\n",
        """        try:
            template = templates.get_template_detail(conn, name)
        except templates.ScanError as exc:
            log.error("ERROR reading template %s: %s", name, exc)
            raise HTTPException(500, f"error reading template {name}: {exc}") from None
""",
    ),
)

_QUOTA_CHECK = (
    "    if len(list_user_sessions(conn, user, active_only=True, limit=QUOTA)) >= QUOTA:\n"
)

BRANCHES: dict[str, Commit] = {
    "builder/P1-SCHEMA-002": Commit(
        "fix(db): P1-SCHEMA-002 - add tags column to sessions table",
        "2025-11-22T03:55:00+00:00",
        (TAGS_FIX,),
    ),
    "builder/P1-SCHEMA-002-wip": Commit(
        "wip: P1-SCHEMA-002 - log the quota check before creating a session",
        "2025-11-22T03:45:00+00:00",
        (
            _insert_before(
                "app/sessions.py",
                _QUOTA_CHECK,
                '    log.info("Checking session quota for %s (template %s)", user, template)\n',
            ),
        ),
    ),
    "builder/P1-SCHEMA-002-plain": Commit(
        "fix(db): P1-SCHEMA-002 - add tags column",
        "2025-11-22T03:50:00+00:00",
        (
            _insert_before(
                "app/db.py",
                _SEED_ANCHOR,
                "    # P1-SCHEMA-002: sessions are tagged.\n"
                '    "ALTER TABLE sessions ADD COLUMN tags TEXT[];",\n',
            ),
        ),
    ),
    "builder/P1-SCHEMA-003": Commit(
        "fix(db): P1-SCHEMA-003 - add sessions.tags, drop redundant sessions.cluster_id",
        "2025-11-22T04:10:00+00:00",
        (
            _insert_before(
                "app/db.py",
                _SEED_ANCHOR,
                _TAGS_MIGRATION
                + "    # P1-SCHEMA-003: sessions.cluster_id duplicates agents.cluster_id.\n"
                '    "ALTER TABLE sessions DROP COLUMN IF EXISTS cluster_id;",\n',
            ),
        ),
    ),
    "builder/P1-API-004": Commit(
        "refactor(api): P1-API-004 - template detail with active session count",
        "2025-11-22T04:20:00+00:00",
        (TAGS_FIX, *TEMPLATE_DETAIL_REFACTOR),
    ),
}

CASES: list[DemoCase] = [
    DemoCase(
        name="fix",
        title="Idempotent tags migration with GIN index",
        base="main",
        head="builder/P1-SCHEMA-002",
        expected_decision="approve",
        expected_risk={"low"},
        bug_id="P1-SCHEMA-002",
        why="the idempotent tags TEXT[] migration and GIN index; every check passes",
        description="Adds sessions.tags TEXT[] in a DO $$ block that checks "
        "information_schema first, plus CREATE INDEX IF NOT EXISTS ... USING GIN(tags): "
        "the reference report's fix. Sessions can be created; earlier fixes still hold.",
    ),
    DemoCase(
        name="no-fix",
        title="Builder branch before the fix",
        base="main",
        head="builder/P1-SCHEMA-002-wip",
        why="the builder's branch before the fix: creating a session fails",
        expected_decision="reject",
        expected_risk=None,
        bug_id="P1-SCHEMA-002",
        description="Only adds a log line; no migration creates sessions.tags, so "
        "POST /api/v1/sessions still answers 500 and the lifecycle suite fails.",
        evidence=('column "tags" does not exist',),
    ),
    DemoCase(
        name="non-idempotent",
        title="Unguarded ALTER TABLE ADD COLUMN",
        base="main",
        head="builder/P1-SCHEMA-002-plain",
        why="ALTER TABLE ... ADD COLUMN without a guard: the second start-up fails",
        expected_decision="reject",
        expected_risk=None,
        bug_id="P1-SCHEMA-002",
        description="Adds the column with a bare ALTER TABLE. The first start-up works; "
        "the next one fails its migrations and the API exits.",
        evidence=('column "tags" of relation "sessions" already exists',),
    ),
    DemoCase(
        name="destructive",
        title="Tags fix plus DROP COLUMN sessions.cluster_id",
        base="main",
        head="builder/P1-SCHEMA-003",
        why="drops sessions.cluster_id, which the API still reads",
        expected_decision="reject",
        expected_risk={"high", "critical"},
        bug_id="P1-SCHEMA-003",
        description="Adds tags correctly but drops sessions.cluster_id, which the code "
        "still selects and inserts: data loss, and session creation fails again "
        "(the P1-SCHEMA-001 regression suite fails too).",
        evidence=("cluster_id",),
    ),
    DemoCase(
        name="regression",
        title="Tags fix plus a template detail refactor that re-breaks TEXT[] scanning",
        base="main",
        head="builder/P1-API-004",
        why="re-breaks the earlier fix P1-DATABASE-001; its regression suite is named",
        expected_decision="reject",
        expected_risk=None,
        bug_id="P1-API-004",
        description="Adds tags correctly, but GET /api/v1/templates/{name} now reads tags "
        "as text and parses it as JSON, which fails on '{browser,web}' (500, 'Scan error'). "
        "Session creation uses another lookup, so the lifecycle passes; the "
        "P1-DATABASE-001 regression suite fails.",
        evidence=("P1-DATABASE-001", 'Scan error on column "tags"'),
    ),
]


def build(dest: Path) -> list[DemoCase]:
    """Create the demo repository at `dest` (absent or empty) and return its cases."""
    example_repo.build_repository(
        dest,
        APP_DIR,
        Commit(INITIAL_MESSAGE, INITIAL_DATE),
        MAIN_FIXES,
        [Branch(name, commit) for name, commit in BRANCHES.items()],
    )
    return list(CASES)


def main(argv: list[str] | None = None) -> int:
    return example_repo.main(argv, __doc__, "build_demo", build)


if __name__ == "__main__":
    sys.exit(main())
