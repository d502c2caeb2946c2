"""index item.owner_id

ITEMS-104: listing a user's items read the whole item table.

Built CONCURRENTLY, outside the revision's transaction, so writes to item go on while the
index builds.

Revision ID: 8b4f0c2d9e15
Revises: 5d2e8f1a6b73
Create Date: 2025-09-10 11:05:37.602448

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "8b4f0c2d9e15"
down_revision: str | Sequence[str] | None = "5d2e8f1a6b73"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("ix_item_owner_id"),
            "item",
            ["owner_id"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(op.f("ix_item_owner_id"), table_name="item", postgresql_concurrently=True)
