"""room tokens know their DPoP key; tokens issued before room_tokens existed are refused

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Each kept room token (``room_tokens``, 0006) now names the DPoP key it is bound to
(``jkt``), so that registering a client's user key from another DPoP key (a lost or
replaced ``dpop-key.pem``, a new profile) revokes the room tokens bound to the key it
moved from: they stayed good at Controllers for their hour (left open by h17). The
manager refuses the tokens of another key issued before the key last moved
(``clients.user_jkt_since``): the old key's tokens acted as the project's member for
their hour, and could register the user key's old signature again, moving the user
back to the old key.

A room token issued before 0006 was not kept, so deleting its room did not revoke it.
A Controller cannot ask the manager whether a token was kept; the revocation list it
fetches refuses a client's tokens issued before the client's ``tokens_not_before``. So
every client's ``tokens_not_before`` is set to the next second here (as a rotation
does, ``projects.revoke_tokens``): every token issued before this upgrade is refused,
by every Controller, old or new, within its refresh. Tokens live an hour at most, and
the command line fetches a refused token again (``cleanroom.client.renewal``): the
upgrade costs one new token per client. A database at 0006 for over an hour had no
unkept token left; it pays that cost too, as no revision records when 0006 ran.
"""

from __future__ import annotations

import time
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
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_jkt_since", sa.Integer(), nullable=True))
    not_before = int(time.time()) + 1
    clients = sa.table(
        "clients", sa.column("tokens_not_before", sa.Integer), sa.column("id", sa.String)
    )
    op.execute(
        clients.update()
        .where(clients.c.tokens_not_before < not_before)
        .values(tokens_not_before=not_before)
    )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("user_jkt_since")
    with op.batch_alter_table("room_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_room_tokens_client_id"))
        batch_op.drop_column("jkt")
