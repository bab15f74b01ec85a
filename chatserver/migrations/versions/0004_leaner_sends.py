"""leaner sends: message events live in their message rows; one index fewer on messages;
conversations keyed by their primary key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:40:00

Every send writes both users' conversation rows and one entry in each index of messages.
It no longer copies the message into ``events`` for each user: the message row carries both
positions, indexed per user (``ix_messages_sender_pos`` replaces ``ix_messages_sender_id``,
``ix_messages_recipient_pos`` is new), and the rows of ``message`` events go. What the
retention had deleted before is recorded as each user's mark at position 0 (everything
before their oldest remaining event), so resuming from there is still a reset.
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


# Each user's mark: the position before their oldest event still held (or their latest,
# when none is), where that is not 0.
MARK_WHAT_IS_GONE = (
    "INSERT INTO events (user_id, pos, kind, up_to_id, at) SELECT id, 0, 'gone', held - 1, 0"
    " FROM (SELECT id, coalesce((SELECT min(pos) FROM events WHERE events.user_id = users.id),"
    " event_pos + 1) AS held FROM users) AS oldest WHERE held > 1"
)
# Downgrade: the message events back, from after each user's mark.
COPY_MESSAGE_EVENTS = (
    "INSERT INTO events (user_id, pos, kind, message_id, at)"
    " SELECT recipient_id, recipient_pos, 'message', id, sent_at FROM messages"
    " WHERE recipient_pos > coalesce((SELECT up_to_id FROM events AS g"
    " WHERE g.user_id = messages.recipient_id AND g.pos = 0), 0) UNION ALL"
    " SELECT sender_id, sender_pos, 'message', id, sent_at FROM messages"
    " WHERE sender_id <> recipient_id AND sender_id IN (SELECT id FROM users)"
    " AND sender_pos > coalesce((SELECT up_to_id FROM events AS g"
    " WHERE g.user_id = messages.sender_id AND g.pos = 0), 0)"
)


def upgrade() -> None:
    op.execute(MARK_WHAT_IS_GONE)
    op.execute("DELETE FROM events WHERE kind = 'message'")
    op.create_index("ix_messages_sender_pos", "messages", ["sender_id", "sender_pos"])
    op.create_index("ix_messages_recipient_pos", "messages", ["recipient_id", "recipient_pos"])
    op.drop_index("ix_messages_sender_id", table_name="messages")
    op.drop_index("ix_messages_pair", table_name="messages")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_conversations(with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_conversations(with_rowid=True)
    op.create_index("ix_messages_pair", "messages", ["recipient_id", "sender_id", "id"])
    op.create_index("ix_messages_sender_id", "messages", ["sender_id", "id"])
    op.drop_index("ix_messages_recipient_pos", table_name="messages")
    op.drop_index("ix_messages_sender_pos", table_name="messages")
    op.execute(COPY_MESSAGE_EVENTS)
    op.execute("DELETE FROM events WHERE pos = 0")


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
