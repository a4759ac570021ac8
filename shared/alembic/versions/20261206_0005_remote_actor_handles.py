"""ActivityPub: the handle a remote actor is shown by (user@domain as its WebFinger confirms it,
else user@host of its URL).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ap_remote_actors", sa.Column("handle", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("ap_remote_actors", "handle")
