"""the user key vouches for a DPoP key

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

A client's registered ``user_id`` was everyone's who held the client's secret, and
the project owner who created or rotated the client saw that secret: through it,
the owner saw the member's rooms in other projects and got room tokens for them.
Registering the user key now also signs the thumbprint of the caller's DPoP key
(``clients.user_jkt``), and only tokens bound to that key are the user. A key
registered before has no ``user_jkt``: its client is the project's member without a
user_id until it registers the key again (``cleanroom login`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_jkt", sa.String(length=43), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("user_jkt")
