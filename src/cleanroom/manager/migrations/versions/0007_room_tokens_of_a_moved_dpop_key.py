"""room tokens know their DPoP key

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Each kept room token (``room_tokens``, 0006) now names the DPoP key it is bound to
(``jkt``), so that registering a client's user key from another DPoP key (a lost or
replaced ``dpop-key.pem``, a new profile) revokes the room tokens bound to the key it
moved from: they stayed good at Controllers for their hour (left open by h17).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("room_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("jkt", sa.String(length=43), nullable=True))
        batch_op.create_index(batch_op.f("ix_room_tokens_client_id"), ["client_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("room_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_room_tokens_client_id"))
        batch_op.drop_column("jkt")
