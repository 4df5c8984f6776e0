"""compute server credentials; room names per project

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10

Compute servers get client credentials towards the manager (an id, the argon2id
hash of a secret, ``tokens_not_before``). A server registered before has none: its
Controller cannot fetch bundles or the revocation list until the operator gives it
credentials (`cleanroom admin server credentials NAME`). A room name is unique
among a project's live rooms instead of among all live rooms.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("compute_servers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("secret_hash", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("tokens_not_before", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.create_unique_constraint(batch_op.f("uq_compute_servers_client_id"), ["client_id"])
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_index(
            "rooms_live_name",
            sqlite_where=sa.text("state != 'deleted'"),
            postgresql_where=sa.text("state != 'deleted'"),
        )
        batch_op.create_index(
            "rooms_live_project_name",
            ["project_id", "name"],
            unique=True,
            sqlite_where=sa.text("state != 'deleted'"),
            postgresql_where=sa.text("state != 'deleted'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_index(
            "rooms_live_project_name",
            sqlite_where=sa.text("state != 'deleted'"),
            postgresql_where=sa.text("state != 'deleted'"),
        )
        batch_op.create_index(
            "rooms_live_name",
            ["name"],
            unique=True,
            sqlite_where=sa.text("state != 'deleted'"),
            postgresql_where=sa.text("state != 'deleted'"),
        )
    with op.batch_alter_table("compute_servers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_compute_servers_client_id"), type_="unique")
        batch_op.drop_column("tokens_not_before")
        batch_op.drop_column("secret_hash")
        batch_op.drop_column("client_id")
