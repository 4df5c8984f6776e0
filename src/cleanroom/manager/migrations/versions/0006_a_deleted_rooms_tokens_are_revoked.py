"""a deleted room's tokens are revoked

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

A user's token for a room names the room's project and name and the server, not the
room: a Controller accepted a token issued for a deleted room on the room of the same
name its project deployed there after, for as long as the token lived (an hour), so a
party of the deleted room, not of the new one, read the new room's state, evidence
and receipt (found by h17's red team). The manager now keeps every room token it
issues until it expires (``room_tokens``) and revokes them when the room is deleted.
Tokens issued before this revision are not known: they expire within the hour.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "room_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("exp", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"]),
        sa.PrimaryKeyConstraint("jti"),
    )
    with op.batch_alter_table("room_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_room_tokens_exp"), ["exp"], unique=False)
        batch_op.create_index(batch_op.f("ix_room_tokens_room_id"), ["room_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("room_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_room_tokens_room_id"))
        batch_op.drop_index(batch_op.f("ix_room_tokens_exp"))
    op.drop_table("room_tokens")
