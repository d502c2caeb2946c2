"""Build the items-api target: a git repository of items-api with builder branches to judge.

`examples/items-api/` holds the service as it stands on `main`: six Alembic revisions, the
first superuser's seed script, and the maintainers' Gatekeeper policy and suites in
`.github/`. This script replays main's history (one commit per revision, then the commit
that adopts Gatekeeper), then adds one builder branch per case: five healthy changes and
six broken ones. Each case's expected decision was written from what a careful maintainer
would decide, before any gate judged it, with the reason in `why`.

    python examples/build_items.py /tmp/items     # builds the repository, prints the cases
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "items-api"


# examples/ is not a package: run as a script or loaded by path (`gatekeeper demo`), either
# way the shared builder module sits beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import example_repo  # noqa: E402

AddFile = example_repo.AddFile
Branch = example_repo.Branch
Case = example_repo.Case
Commit = example_repo.Commit
Edit = example_repo.Edit

VERSIONS = "alembic/versions"
MODELS = "app/models.py"
ITEMS = "app/routes/items.py"
USERS = "app/routes/users.py"
README = "README.md"


def _after(path: str, anchor: str, text: str) -> Edit:
    return Edit(path, anchor, anchor + text)


def _revision(
    revision: str, down: str, message: str, date: str, upgrade: str, downgrade: str
) -> AddFile:
    """A revision file as `alembic revision` writes it from alembic/script.py.mako."""
    # As Alembic makes it: the first line's words, cut at a word within 40 characters.
    slug = "_".join(re.findall(r"\w+", message.split("\n")[0])).lower()
    if len(slug) > 40:
        slug = slug[:40].rsplit("_", 1)[0]
    uses_sa = "sa." in upgrade + downgrade
    text = f'''"""{message}

Revision ID: {revision}
Revises: {down}
Create Date: {date}

"""

from collections.abc import Sequence

{"import sqlalchemy as sa" + chr(10) if uses_sa else ""}from alembic import op

# revision identifiers, used by Alembic.
revision: str = "{revision}"
down_revision: str | Sequence[str] | None = "{down}"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
{upgrade}

def downgrade() -> None:
{downgrade}'''
    return AddFile(f"{VERSIONS}/{revision}_{slug}.py", text)


# --- main's history ---------------------------------------------------------------------
# Undone from examples/items-api/, newest first, to find the first commit.

_README_ROW = '| `1a7c3e9b2f40` | `"user"`: UUID key, unique email, password hash, flags |\n'
_ITEM_ENDPOINT_ROWS = """\
| `GET /api/v1/items/?skip=&limit=` | 200 `{"data": [...], "count": n}`; a superuser sees every user's |
| `POST /api/v1/items/` `{"title", "description"?}` | 201 the item |
| `GET`, `PUT`, `DELETE /api/v1/items/{id}` | the item, updated (`title`, `description`), or `{"message": "Item deleted successfully"}`; 404 when it is not yours |
"""  # noqa: E501 - a Markdown table row is one line

_ITEM_MODEL = """

class Item(Base):
    __tablename__ = "item"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
"""
_OWNER_INDEXED = """    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user.id", ondelete="CASCADE"), index=True
    )
"""
_CREATED_AT = (
    "    created_at: Mapped[datetime] = mapped_column("
    "DateTime(timezone=True), server_default=func.now())\n"
)
_ASSIGNEE = "    assignee_id: Mapped[uuid.UUID | None] = mapped_column(index=True)\n"
_LAST_LOGIN = (
    "    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))\n"
)
_SUPERUSER_COLUMN = (
    "    is_superuser: Mapped[bool] = mapped_column(default=False, server_default=false())\n"
)

ITEMS_FEATURE = (
    AddFile(f"{VERSIONS}/5d2e8f1a6b73_create_item_table.py"),
    AddFile(ITEMS),
    Edit(
        MODELS,
        "from sqlalchemy import String, false, true\n",
        "from sqlalchemy import ForeignKey, String, false, true\n",
    ),
    Edit(MODELS, _SUPERUSER_COLUMN, _SUPERUSER_COLUMN + _ITEM_MODEL),
    Edit(
        "app/main.py",
        "from .routes import login, users, utils\n",
        "from .routes import items, login, users, utils\n",
    ),
    _after(
        "app/main.py", "api.include_router(utils.router)\n", "api.include_router(items.router)\n"
    ),
    _after(
        README,
        _README_ROW,
        "| `5d2e8f1a6b73` | `item`: UUID key, owned by a user (`ON DELETE CASCADE`) |\n",
    ),
    _after(
        README,
        "| `GET /api/v1/users/me`, `PATCH /api/v1/users/me` | the signed-in user; PATCH changes "
        "`email`, `full_name` |\n",
        _ITEM_ENDPOINT_ROWS,
    ),
)

OWNER_INDEX = (
    AddFile(f"{VERSIONS}/8b4f0c2d9e15_index_item_owner_id.py"),
    Edit(
        MODELS,
        "    owner_id: Mapped[uuid.UUID] = mapped_column("
        'ForeignKey("user.id", ondelete="CASCADE"))\n',
        _OWNER_INDEXED,
    ),
    _after(
        README,
        "| `5d2e8f1a6b73` | `item`: UUID key, owned by a user (`ON DELETE CASCADE`) |\n",
        "| `8b4f0c2d9e15` | ITEMS-104: index `item.owner_id`, built concurrently |\n",
    ),
)

CREATED_AT = (
    AddFile(f"{VERSIONS}/c3a91e7f4d28_add_item_created_at.py"),
    Edit(MODELS, "import uuid\n\n", "import uuid\nfrom datetime import datetime\n\n"),
    Edit(
        MODELS,
        "from sqlalchemy import ForeignKey, String, false, true\n",
        "from sqlalchemy import DateTime, ForeignKey, String, false, func, true\n",
    ),
    Edit(MODELS, _OWNER_INDEXED, _OWNER_INDEXED + _CREATED_AT),
    Edit(ITEMS, "import uuid\n\n", "import uuid\nfrom datetime import datetime\n\n"),
    _after(ITEMS, "    owner_id: uuid.UUID\n", "    created_at: datetime\n"),
    Edit(
        ITEMS,
        "    items = session.scalars(select(Item).where(*where).offset(skip).limit(limit))\n",
        "    items = session.scalars(\n"
        "        select(Item).where(*where).order_by(Item.created_at.desc())"
        ".offset(skip).limit(limit)\n"
        "    )\n",
    ),
    Edit(
        README,
        '| 200 `{"data": [...], "count": n}`; a superuser',
        '| 200 `{"data": [...], "count": n}`, newest first; a superuser',
    ),
    _after(
        README,
        "| `8b4f0c2d9e15` | ITEMS-104: index `item.owner_id`, built concurrently |\n",
        "| `c3a91e7f4d28` | ITEMS-109: `item.created_at`, items listed newest first |\n",
    ),
)

LAST_LOGIN = (
    AddFile(f"{VERSIONS}/e6f20b8a3c51_add_user_last_login_at.py"),
    Edit(MODELS, _SUPERUSER_COLUMN, _SUPERUSER_COLUMN + _LAST_LOGIN),
    Edit(
        "app/routes/login.py",
        "from datetime import timedelta\n",
        "from datetime import UTC, datetime, timedelta\n",
    ),
    Edit(
        "app/routes/login.py",
        '        raise HTTPException(400, "Inactive user")\n    settings',
        '        raise HTTPException(400, "Inactive user")\n'
        "    user.last_login_at = datetime.now(UTC)\n    session.commit()\n    settings",
    ),
    Edit(USERS, "import uuid\n\n", "import uuid\nfrom datetime import datetime\n\n"),
    _after(USERS, "    is_superuser: bool\n", "    last_login_at: datetime | None\n"),
    _after(
        README,
        "| `c3a91e7f4d28` | ITEMS-109: `item.created_at`, items listed newest first |\n",
        "| `e6f20b8a3c51` | `user.last_login_at`, set at each login |\n",
    ),
)

_DESCRIPTION_FIELD = "    description: str | None = Field(default=None, max_length=255)\n"
_ASSIGNEE_CHECK = """\
    if changes.get("assignee_id") is not None and session.get(User, changes["assignee_id"]) is None:
        raise HTTPException(422, "Assignee not found")
"""

ASSIGNEE = (
    AddFile(f"{VERSIONS}/f9d47a1c0e82_add_item_assignee_id.py"),
    Edit(MODELS, _CREATED_AT, _CREATED_AT + _ASSIGNEE),
    Edit(
        ITEMS,
        _DESCRIPTION_FIELD + "\n\nclass ItemPublic",
        _DESCRIPTION_FIELD + "    assignee_id: uuid.UUID | None = None\n\n\nclass ItemPublic",
    ),
    _after(ITEMS, "    created_at: datetime\n", "    assignee_id: uuid.UUID | None\n"),
    _after(ITEMS, "    changes = body.model_dump(exclude_unset=True)\n", _ASSIGNEE_CHECK),
    Edit(
        README,
        "updated (`title`, `description`)",
        "updated (`title`, `description`, `assignee_id`)",
    ),
    _after(
        README,
        "| `e6f20b8a3c51` | `user.last_login_at`, set at each login |\n",
        "| `f9d47a1c0e82` | `item.assignee_id` and its index (no foreign key yet) |\n",
    ),
)

_SUITES = ".github/gatekeeper/checks"
ADOPT_GATEKEEPER = (
    AddFile(".github/gatekeeper.yml"),
    AddFile(f"{_SUITES}/lifecycle.yml"),
    AddFile(f"{_SUITES}/database.yml"),
    AddFile(f"{_SUITES}/ITEMS-104.yml"),
    AddFile(f"{_SUITES}/ITEMS-109.yml"),
)

INITIAL = Commit(
    "feat: users, OAuth2 password login, first superuser; schema by Alembic",
    "2025-09-01T09:00:00+00:00",
)
MAIN_HISTORY = (
    Commit(
        "feat: items owned by their user, with CRUD", "2025-09-03T14:41:00+00:00", ITEMS_FEATURE
    ),
    Commit(
        "fix(db): ITEMS-104 - index item.owner_id; listing my items read every item",
        "2025-09-10T11:06:00+00:00",
        OWNER_INDEX,
    ),
    Commit(
        "fix(items): ITEMS-109 - add item.created_at and list items newest first",
        "2025-09-18T16:23:00+00:00",
        CREATED_AT,
    ),
    Commit("feat(users): record each user's last login", "2025-10-14T10:32:00+00:00", LAST_LOGIN),
    Commit("feat(items): assign an item to a user", "2025-10-28T15:48:00+00:00", ASSIGNEE),
    Commit(
        "ci: gate builder branches with Gatekeeper (policy, lifecycle, database and regression "
        "suites)",
        "2025-11-03T10:00:00+00:00",
        ADOPT_GATEKEEPER,
    ),
)
HEAD_REVISION = "f9d47a1c0e82"

# --- builder branches -------------------------------------------------------------------

DUE_DATE = (
    _revision(
        "2b8e5c71d0a4",
        HEAD_REVISION,
        "add item.due_date",
        "2025-11-10 09:14:02.481516",
        '    op.add_column("item", sa.Column("due_date", sa.Date(), nullable=True))\n',
        '    op.drop_column("item", "due_date")\n',
    ),
    Edit(MODELS, "from datetime import datetime\n", "from datetime import date, datetime\n"),
    _after(MODELS, _ASSIGNEE, "    due_date: Mapped[date | None]\n"),
    Edit(ITEMS, "from datetime import datetime\n", "from datetime import date, datetime\n"),
    Edit(
        ITEMS,
        _DESCRIPTION_FIELD + "\n\nclass ItemUpdate",
        _DESCRIPTION_FIELD + "    due_date: date | None = None\n\n\nclass ItemUpdate",
    ),
    _after(
        ITEMS, "    assignee_id: uuid.UUID | None = None\n", "    due_date: date | None = None\n"
    ),
    _after(ITEMS, "    assignee_id: uuid.UUID | None\n", "    due_date: date | None\n"),
)

WIDEN_FULL_NAME = (
    _revision(
        "4c0d9a3e7b12",
        HEAD_REVISION,
        "widen user.full_name to 255 characters",
        "2025-11-10 11:40:37.902211",
        """    op.alter_column(
        "user",
        "full_name",
        existing_type=sa.String(length=100),
        type_=sa.String(length=255),
        existing_nullable=True,
    )
""",
        """    op.alter_column(
        "user",
        "full_name",
        existing_type=sa.String(length=255),
        type_=sa.String(length=100),
        existing_nullable=True,
    )
""",
    ),
    Edit(
        MODELS,
        "full_name: Mapped[str | None] = mapped_column(String(100))",
        "full_name: Mapped[str | None] = mapped_column(String(255))",
    ),
    Edit(
        USERS,
        "full_name: str | None = Field(default=None, max_length=100)",
        "full_name: str | None = Field(default=None, max_length=255)",
    ),
)

_FK = "item_assignee_id_fkey"
ASSIGNEE_FOREIGN_KEY = (
    _revision(
        "6e1f2a8b9c30",
        HEAD_REVISION,
        "item.assignee_id references user, not valid yet\n\n"
        "NOT VALID: new and updated rows are checked at once, the 2,000,000 existing rows are\n"
        "not scanned under the ALTER's lock. The next revision validates them.",
        "2025-11-11 08:55:13.114906",
        f"""    op.execute(
        "ALTER TABLE item ADD CONSTRAINT {_FK} FOREIGN KEY (assignee_id) "
        'REFERENCES "user" (id) ON DELETE SET NULL NOT VALID'
    )
""",
        f'    op.drop_constraint("{_FK}", "item", type_="foreignkey")\n',
    ),
    _revision(
        "7a3b4c5d6e71",
        "6e1f2a8b9c30",
        "validate item.assignee_id's foreign key\n\n"
        "In its own transaction (env.py: transaction_per_migration): VALIDATE CONSTRAINT scans\n"
        "item under SHARE UPDATE EXCLUSIVE, which lets reads and writes go on.",
        "2025-11-11 08:56:40.377120",
        f'    op.execute("ALTER TABLE item VALIDATE CONSTRAINT {_FK}")\n',
        "    # A validated constraint cannot be made NOT VALID again; the previous revision's\n"
        "    # downgrade drops it.\n    pass\n",
    ),
    Edit(
        MODELS,
        _ASSIGNEE,
        "    assignee_id: Mapped[uuid.UUID | None] = mapped_column(\n"
        '        ForeignKey("user.id", ondelete="SET NULL"), index=True\n'
        "    )\n",
    ),
)

BACKFILL_FULL_NAME = (
    _revision(
        "8d5e6f7a8b92",
        HEAD_REVISION,
        "backfill user.full_name from the email address\n\n"
        "Users created before the profile page have no full name and show as blank.",
        "2025-11-12 13:02:51.640387",
        "    op.execute(\n"
        '        "UPDATE \\"user\\" SET full_name = left(split_part(email, \'@\', 1), 100) "\n'
        '        "WHERE full_name IS NULL"\n'
        "    )\n",
        "    # Backfilled names cannot be told from names users typed: they stay.\n    pass\n",
    ),
    _after(
        "app/initial_data.py",
        "            email=settings.email,\n",
        '            full_name=settings.email.partition("@")[0][:100],\n',
    ),
)

EMAIL_VALIDATION = (
    _after("requirements.txt", "python-multipart>=0.0.9\n", "email-validator>=2.0\n"),
    Edit(
        USERS,
        "from pydantic import BaseModel, ConfigDict, Field\n",
        "from pydantic import BaseModel, ConfigDict, EmailStr, Field\n",
    ),
    Edit(
        USERS,
        "    email: str | None = Field(default=None, min_length=3, max_length=255)\n",
        "    email: EmailStr | None = Field(default=None, max_length=255)\n",
    ),
)

TITLE_SEARCH = (
    Edit(
        MODELS,
        "    title: Mapped[str] = mapped_column(String(255))\n",
        "    title: Mapped[str] = mapped_column(String(255), index=True)\n",
    ),
    Edit(
        ITEMS,
        "    session: SessionDep, current_user: CurrentUser, skip: int = 0, limit: int = 100\n"
        ") -> ItemsPublic:\n"
        "    where = _visible(current_user)\n",
        "    session: SessionDep,\n"
        "    current_user: CurrentUser,\n"
        "    skip: int = 0,\n"
        "    limit: int = 100,\n"
        "    q: str | None = None,\n"
        ") -> ItemsPublic:\n"
        '    """`q` finds items whose title contains it, ignoring case."""\n'
        "    where = _visible(current_user)\n"
        "    if q:\n"
        '        where.append(Item.title.ilike(f"%{q}%"))\n',
    ),
)

USER_TIMEZONE = (
    _revision(
        "9e7f8a1b2c03",
        HEAD_REVISION,
        "add user.timezone",
        "2025-11-13 17:20:09.006342",
        '    op.add_column("user", sa.Column("timezone", sa.String(length=64), nullable=False))\n',
        '    op.drop_column("user", "timezone")\n',
    ),
    _after(MODELS, _LAST_LOGIN, "    timezone: Mapped[str] = mapped_column(String(64))\n"),
    _after(USERS, "    last_login_at: datetime | None\n", "    timezone: str\n"),
    _after(
        "app/initial_data.py",
        "            email=settings.email,\n",
        '            timezone="UTC",\n',
    ),
)

CRUD_MODULE = '''"""Item writes, kept apart from the HTTP layer so scripts and routes share them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from .models import Item


def create_item(session: Session, owner_id: uuid.UUID, fields: dict[str, Any]) -> Item:
    item = Item(**fields, owner_id=owner_id)
    session.add(item)
    session.commit()
    return item


def update_item(session: Session, item: Item, changes: dict[str, Any]) -> Item:
    for field, value in changes.items():
        setattr(item, field, value)
    session.commit()
    return item


def delete_item(session: Session, item: Item) -> None:
    session.delete(item)
    session.flush()
'''

CRUD_REFACTOR = (
    AddFile("app/crud.py", CRUD_MODULE),
    Edit(ITEMS, "from ..deps import", "from .. import crud\nfrom ..deps import"),
    Edit(
        ITEMS,
        "    item = Item(**body.model_dump(), owner_id=current_user.id)\n"
        "    session.add(item)\n"
        "    session.commit()\n",
        "    item = crud.create_item(session, current_user.id, body.model_dump())\n",
    ),
    Edit(
        ITEMS,
        "    for field, value in changes.items():\n"
        "        setattr(item, field, value)\n"
        "    session.commit()\n"
        "    return ItemPublic.model_validate(item)\n",
        "    return ItemPublic.model_validate(crud.update_item(session, item, changes))\n",
    ),
    Edit(
        ITEMS,
        "    session.delete(item)\n    session.commit()\n",
        "    crud.delete_item(session, item)\n",
    ),
)

DROP_ASSIGNEE = (
    _revision(
        "a0b1c2d3e4f5",
        HEAD_REVISION,
        "drop item.assignee_id\n\nNo client sets an assignee: the column is unused.",
        "2025-11-14 10:05:44.518820",
        '    op.drop_index(op.f("ix_item_assignee_id"), table_name="item")\n'
        '    op.drop_column("item", "assignee_id")\n',
        '    op.add_column("item", sa.Column("assignee_id", sa.Uuid(), nullable=True))\n'
        '    op.create_index(op.f("ix_item_assignee_id"), "item", ["assignee_id"], unique=False)\n',
    ),
)

USERNAME = (
    _revision(
        "b2c3d4e5f6a7",
        HEAD_REVISION,
        "add user.username",
        "2025-11-14 15:31:27.734905",
        '    op.add_column("user", sa.Column("username", sa.String(length=50), nullable=True))\n'
        '    op.create_unique_constraint(None, "user", ["username"])\n',
        '    op.drop_constraint(None, "user", type_="unique")\n'
        '    op.drop_column("user", "username")\n',
    ),
    _after(
        MODELS,
        "    email: Mapped[str] = mapped_column(String(255), unique=True, index=True)\n",
        "    username: Mapped[str | None] = mapped_column(String(50), unique=True)\n",
    ),
    _after(USERS, "    email: str\n", "    username: str | None\n"),
    _after(
        USERS,
        "    full_name: str | None = Field(default=None, max_length=100)\n",
        "    username: str | None = Field(default=None, min_length=3, max_length=50)\n",
    ),
    _after(
        USERS,
        '            raise HTTPException(409, "User with this email already exists")\n',
        "    if body.username is not None and body.username != current_user.username:\n"
        "        taken = session.scalar(select(User.id).where(User.username == body.username))\n"
        "        if taken is not None:\n"
        '            raise HTTPException(409, "Username already taken")\n',
    ),
)

# Begun on main~2, before f9d47a1c0e82 landed: its revision follows e6f20b8a3c51 too.
ARCHIVED_AT = (
    _revision(
        "c4d5e6f7a8b9",
        "e6f20b8a3c51",
        "add item.archived_at",
        "2025-10-27 12:12:12.120871",
        '    op.add_column("item", sa.Column("archived_at", sa.DateTime(timezone=True), '
        "nullable=True))\n",
        '    op.drop_column("item", "archived_at")\n',
    ),
    _after(
        MODELS,
        "    description: Mapped[str | None] = mapped_column(String(255))\n",
        "    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))\n",
    ),
    _after(ITEMS, "    description: str | None\n", "    archived_at: datetime | None\n"),
)

BRANCHES = (
    Branch(
        "builder/ITEMS-201",
        Commit(
            "feat(items): ITEMS-201 - items can have a due date",
            "2025-11-10T09:20:00+00:00",
            DUE_DATE,
        ),
    ),
    Branch(
        "builder/ITEMS-202",
        Commit(
            "fix(users): ITEMS-202 - accept full names up to 255 characters",
            "2025-11-10T11:45:00+00:00",
            WIDEN_FULL_NAME,
        ),
    ),
    Branch(
        "builder/ITEMS-203",
        Commit(
            "fix(items): ITEMS-203 - item.assignee_id references user (NOT VALID, then VALIDATE)",
            "2025-11-11T09:00:00+00:00",
            ASSIGNEE_FOREIGN_KEY,
        ),
    ),
    Branch(
        "builder/ITEMS-204",
        Commit(
            "fix(users): ITEMS-204 - backfill empty full names from the email address",
            "2025-11-12T13:10:00+00:00",
            BACKFILL_FULL_NAME,
        ),
    ),
    Branch(
        "builder/ITEMS-205",
        Commit(
            "fix(users): ITEMS-205 - validate email addresses with email-validator",
            "2025-11-12T16:30:00+00:00",
            EMAIL_VALIDATION,
        ),
    ),
    Branch(
        "builder/ITEMS-206",
        Commit(
            "feat(items): ITEMS-206 - search items by title (?q=), indexed",
            "2025-11-13T10:00:00+00:00",
            TITLE_SEARCH,
        ),
    ),
    Branch(
        "builder/ITEMS-207",
        Commit(
            "feat(users): ITEMS-207 - store each user's time zone",
            "2025-11-13T17:25:00+00:00",
            USER_TIMEZONE,
        ),
    ),
    Branch(
        "builder/ITEMS-208",
        Commit(
            "refactor(items): ITEMS-208 - item writes in app/crud.py",
            "2025-11-14T09:00:00+00:00",
            CRUD_REFACTOR,
        ),
    ),
    Branch(
        "builder/ITEMS-209",
        Commit(
            "chore(db): ITEMS-209 - drop the unused item.assignee_id",
            "2025-11-14T10:10:00+00:00",
            DROP_ASSIGNEE,
        ),
    ),
    Branch(
        "builder/ITEMS-210",
        Commit(
            "feat(users): ITEMS-210 - optional unique username",
            "2025-11-14T15:35:00+00:00",
            USERNAME,
        ),
    ),
    Branch(
        "builder/ITEMS-211",
        Commit("feat(items): ITEMS-211 - archive items", "2025-10-27T12:20:00+00:00", ARCHIVED_AT),
        start="main~2",
    ),
)

# Written before any gate judged these branches; a case that comes out differently is a
# finding about the gate, not a reason to edit the case.
CASES: list[Case] = [
    Case(
        name="additive-column",
        title="Nullable item.due_date, exposed by the item routes",
        base="main",
        head="builder/ITEMS-201",
        expected_decision="approve",
        expected_risk={"low"},
        bug_id="ITEMS-201",
        description="One revision adds item.due_date DATE NULL; the model and the item "
        "schemas carry it. No default, so no rewrite of the 2,000,000-row table, and code "
        "that does not know the column is unaffected.",
        why="a nullable column without a default: a catalog change only; every check passes",
    ),
    Case(
        name="type-widening",
        title="user.full_name varchar(100) -> varchar(255)",
        base="main",
        head="builder/ITEMS-202",
        expected_decision="approve",
        expected_risk={"low"},
        bug_id="ITEMS-202",
        description="alter_column from String(100) to String(255) on the 50,000-row user "
        "table, with the model and PATCH /users/me's limit raised to match. Widening a "
        "varchar neither rewrites nor scans the table.",
        why="raising a varchar limit is catalog-only in PostgreSQL; the API accepts what the "
        "column now holds",
    ),
    Case(
        name="careful-foreign-key",
        title="Foreign key on the large item table: NOT VALID, then VALIDATE CONSTRAINT",
        base="main",
        head="builder/ITEMS-203",
        expected_decision="approve",
        expected_risk=None,
        bug_id="ITEMS-203",
        description="Two revisions: ADD CONSTRAINT item_assignee_id_fkey ... NOT VALID, then "
        "VALIDATE CONSTRAINT in its own transaction; the model declares the foreign key with "
        "ON DELETE SET NULL, so alembic check agrees.",
        why="the lock for NOT VALID is momentary and VALIDATE lets reads and writes go on: "
        "the way to add a foreign key to 2,000,000 rows",
    ),
    Case(
        name="backfill",
        title="Backfill user.full_name from the email where it is NULL",
        base="main",
        head="builder/ITEMS-204",
        expected_decision="approve",
        expected_risk=None,
        bug_id="ITEMS-204",
        description='A data revision: UPDATE "user" SET full_name = ... WHERE full_name IS '
        "NULL. The seeded superuser has none, so the update really changes a row; the seed "
        "script sets a name for new installs.",
        why="one UPDATE of the rows that lack a name on the 50,000-row user table; schema "
        "unchanged, checks pass",
    ),
    Case(
        name="new-dependency",
        title="Email validation with a new dependency (email-validator)",
        base="main",
        head="builder/ITEMS-205",
        expected_decision="approve",
        expected_risk={"low"},
        bug_id="ITEMS-205",
        description="requirements.txt gains email-validator and PATCH /users/me types email "
        "as EmailStr, which needs it. The head must run in its own build: with the base's "
        "packages it would not even import.",
        why="code only, no schema change; the head's build has its new dependency and every "
        "check passes",
    ),
    Case(
        name="model-without-revision",
        title="Title search: the model gains an index no revision creates",
        base="main",
        head="builder/ITEMS-206",
        expected_decision="reject",
        expected_risk=None,
        bug_id="ITEMS-206",
        description="Item.title gets index=True and the list a ?q= filter, but no revision "
        "is added. The API works (slowly); alembic check finds ix_item_title missing.",
        evidence=("ix_item_title",),
        why="the models and the migrations disagree: alembic check fails, and the next "
        "autogenerate would slip the index into someone else's revision",
    ),
    Case(
        name="required-column",
        title="user.timezone NOT NULL without a default",
        base="main",
        head="builder/ITEMS-207",
        expected_decision="reject",
        expected_risk=None,
        bug_id="ITEMS-207",
        description="add_column('user', Column('timezone', String(64), nullable=False)) on "
        "a table that has rows: the seeded superuser (and 50,000 users in production) makes "
        "the ALTER fail.",
        evidence=('column "timezone" of relation "user" contains null values',),
        why="the migration cannot run on a table with rows: it fails here and would fail "
        "in production",
    ),
    Case(
        name="delete-not-deleting",
        title="CRUD refactor whose delete never commits",
        base="main",
        head="builder/ITEMS-208",
        expected_decision="reject",
        expected_risk=None,
        bug_id="ITEMS-208",
        description="Item writes move to app/crud.py; delete_item flushes but does not "
        "commit, so DELETE answers 200 'Item deleted successfully' and the item stays.",
        evidence=("item-gone",),
        why="the lifecycle's read after DELETE is 200, not 404, and the row is still there",
    ),
    Case(
        name="dropped-column",
        title="Drop item.assignee_id, which the code still uses",
        base="main",
        head="builder/ITEMS-209",
        expected_decision="reject",
        expected_risk={"high", "critical"},
        bug_id="ITEMS-209",
        description="A revision drops item.assignee_id and its index; the model, the item "
        "routes and their responses still name it, so every item query fails, and the "
        "column's data is lost on the 2,000,000-row table.",
        evidence=("assignee_id",),
        why="data loss on a large table and a broken API: every item route answers 500",
    ),
    Case(
        name="downgrade-fails",
        title="user.username with a unique constraint whose downgrade cannot run",
        base="main",
        head="builder/ITEMS-210",
        expected_decision="review",
        expected_risk=None,
        bug_id="ITEMS-210",
        description="As autogenerate writes it without a naming convention: "
        "create_unique_constraint(None, ...) works (PostgreSQL names it), but downgrade() "
        "calls drop_constraint(None, ...), which cannot run.",
        evidence=("downgrade",),
        why="everything forward passes, but the rollback path is broken: a person decides "
        "(the policy leaves downgrade at its default, review)",
    ),
    Case(
        name="two-heads",
        title="A revision from a branch begun before main's latest one: two heads",
        base="main",
        head="builder/ITEMS-211",
        expected_decision="reject",
        expected_risk=None,
        bug_id="ITEMS-211",
        description="The branch started on main~2; its revision c4d5e6f7a8b9 and main's "
        "f9d47a1c0e82 both follow e6f20b8a3c51. Git merges the files cleanly; Alembic has "
        "two heads and `upgrade head` refuses to pick one.",
        evidence=("c4d5e6f7a8b9", "f9d47a1c0e82"),
        why="after the merge the revision graph has two heads: nothing can be deployed "
        "until a merge revision joins them",
    ),
]


def build(dest: Path) -> list[Case]:
    """Create the items-api repository at `dest` (absent or empty) and return its cases."""
    example_repo.build_repository(dest, APP_DIR, INITIAL, MAIN_HISTORY, BRANCHES)
    return list(CASES)


def main(argv: list[str] | None = None) -> int:
    return example_repo.main(argv, __doc__, "build_items", build)


if __name__ == "__main__":
    sys.exit(main())
