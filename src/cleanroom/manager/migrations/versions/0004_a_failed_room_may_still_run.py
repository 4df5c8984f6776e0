"""a failed room may still run its Worker

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

A room whose deploy got no answer from its Controller became ``failed`` and freed its
slot, yet the Controller could go on and start its Worker, past the project's room
quota and the server's capacity. Such a room now keeps its slot until it is deleted
(``rooms.may_still_run``), unless the Controller confirmed it deleted the room. Rooms
failed before keep none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("may_still_run", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_column("may_still_run")
