"""a logout ends every manager token of its client and DPoP key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

A logout (``POST /v1/whoami/logout``) revoked the manager token it was sent with and
the room tokens of its DPoP key, but the manager does not keep its own tokens: those of
the same client and key from an earlier login lived out their hour (left open by h24).
``key_logouts`` keeps, per client and DPoP key, the moment of the last logout; the
manager refuses that client's tokens of that key issued before it (``token-revoked``).
Nothing to fill in: no logout before this revision is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_logouts",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jkt", sa.String(length=43), nullable=False),
        sa.Column("not_before", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"]),
        sa.PrimaryKeyConstraint("client_id", "jkt"),
    )
    with op.batch_alter_table("key_logouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_key_logouts_not_before"), ["not_before"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("key_logouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_key_logouts_not_before"))
    op.drop_table("key_logouts")
