"""leaner sends: one index fewer on messages; conversations keyed by their primary key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:40:00

Every send writes both users' conversation rows and one entry in each index of messages.
``ix_messages_pair`` goes: a read mark's count of messages received up to an id comes from
the conversation index instead (a message's number in its conversation, less its number in
its own direction, is how many went the other way up to it). On SQLite, ``conversations``
becomes a WITHOUT ROWID table: each row lives in its primary key's B-tree, so an update
touches one B-tree fewer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COPY_ROWS = (
    "INSERT INTO conversations_new (user_id, peer_id, last_message_id, received_count,"
    " unread_count, last_read_id) SELECT user_id, peer_id, last_message_id, received_count,"
    " unread_count, last_read_id FROM conversations"
)


def upgrade() -> None:
    op.drop_index("ix_messages_pair", table_name="messages")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_conversations(with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_conversations(with_rowid=True)
    op.create_index("ix_messages_pair", "messages", ["recipient_id", "sender_id", "id"])


def _rebuild_conversations(with_rowid: bool) -> None:
    """SQLite cannot change a table's storage in place: copy the rows into a new table."""
    op.create_table(
        "conversations_new",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("peer_id", sa.BigInteger(), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=False),
        sa.Column("received_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unread_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_read_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "peer_id"),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(COPY_ROWS)
    op.drop_index("ix_conversations_latest", table_name="conversations")
    op.drop_table("conversations")
    op.rename_table("conversations_new", "conversations")
    op.create_index("ix_conversations_latest", "conversations", ["user_id", "last_message_id"])
