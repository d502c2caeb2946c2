"""add item.assignee_id

An item can be assigned to another user. The index is built CONCURRENTLY (item is large);
the foreign key is left for a later revision, for the same reason.

Revision ID: f9d47a1c0e82
Revises: e6f20b8a3c51
Create Date: 2025-10-28 15:47:21.553106

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "f9d47a1c0e82"
down_revision: str | Sequence[str] | None = "e6f20b8a3c51"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("item", sa.Column("assignee_id", sa.Uuid(), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("ix_item_assignee_id"),
            "item",
            ["assignee_id"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(op.f("ix_item_assignee_id"), table_name="item", postgresql_concurrently=True)
    op.drop_column("item", "assignee_id")
