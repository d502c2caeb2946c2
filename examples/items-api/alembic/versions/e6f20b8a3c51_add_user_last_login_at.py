"""add user.last_login_at

Revision ID: e6f20b8a3c51
Revises: c3a91e7f4d28
Create Date: 2025-10-14 10:31:58.220931

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "e6f20b8a3c51"
down_revision: str | Sequence[str] | None = "c3a91e7f4d28"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("user", sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("user", "last_login_at")
