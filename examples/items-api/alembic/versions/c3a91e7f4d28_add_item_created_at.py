"""add item.created_at

ITEMS-109: items were listed in no particular order; they are now listed newest first.
now() is evaluated once for the ALTER, so existing rows share it and the table is not
rewritten.

Revision ID: c3a91e7f4d28
Revises: 8b4f0c2d9e15
Create Date: 2025-09-18 16:22:10.087654

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c3a91e7f4d28"
down_revision: str | Sequence[str] | None = "8b4f0c2d9e15"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "item",
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("item", "created_at")
