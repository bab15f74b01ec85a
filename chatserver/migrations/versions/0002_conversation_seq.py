"""conversation sequence numbers

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:00:00

A ``?with=`` read counted the conversation's index entries on every request (work that
grew with the conversation, on the event loop). Each message now carries its number in
its conversation (1, 2, 3 …, dense), so the count is the latest message's number: one index
seek. Existing messages are numbered in id order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("conversation_seq", sa.BigInteger(), server_default="0", nullable=False),
    )
    # UPDATE … FROM: SQLite 3.33+ and PostgreSQL.
    op.execute(
        "UPDATE messages SET conversation_seq = numbered.seq FROM (SELECT id,"
        " row_number() OVER (PARTITION BY peer_lo, peer_hi ORDER BY id) AS seq"
        " FROM messages) AS numbered WHERE messages.id = numbered.id"
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("conversation_seq")
