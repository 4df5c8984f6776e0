"""each project's own last upload of a bundle

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

A bundle counted in the function quota of every project that ever uploaded it for as
long as it was stored, and another project's live room on it (a participant of one of
the uploader's rooms may deploy its own on it) kept it stored for ever: the uploader
could not free those bytes (found by the manager's red team). A project's quota now
counts a bundle it uploaded only within the grace period after its own last upload
(``function_uploaders.uploaded``), or while a live room of its own uses it, or while no
other project's live room does. Existing rows take the bundle's last upload time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("function_uploaders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uploaded", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE function_uploaders SET uploaded = (SELECT functions.uploaded FROM functions "
        "WHERE functions.digest = function_uploaders.digest)"
    )


def downgrade() -> None:
    with op.batch_alter_table("function_uploaders", schema=None) as batch_op:
        batch_op.drop_column("uploaded")
