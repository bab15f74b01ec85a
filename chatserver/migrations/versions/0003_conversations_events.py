"""conversations, read marks and a positioned event log per user

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 22:20:00

Existing data is carried over: each user's messages become their first events, in id
order, and every pair of users who exchanged messages gets its two conversation rows
(unread = every message received, as nothing was marked read before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in ("unread_total", "event_pos"):
        op.add_column(
            "users", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False)
        )
    for column in ("pair_seq", "sender_pos", "recipient_pos"):
        op.add_column(
            "messages", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_index("ix_messages_pair", "messages", ["recipient_id", "sender_id", "id"])
    _create_tables()
    _carry_over()


def _create_tables() -> None:
    op.create_table(
        "conversations",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("peer_id", sa.BigInteger(), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=False),
        sa.Column("received_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unread_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_read_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "peer_id"),
    )
    op.create_index("ix_conversations_latest", "conversations", ["user_id", "last_message_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("pos", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("by_id", sa.BigInteger(), nullable=True),
        sa.Column("of_id", sa.BigInteger(), nullable=True),
        sa.Column("up_to_id", sa.BigInteger(), nullable=True),
        sa.Column("message_ids", sa.Text(), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_user_pos", "events", ["user_id", "pos"], unique=True)


def _carry_over() -> None:
    # UPDATE … FROM and window functions: SQLite 3.33+ and PostgreSQL.
    op.execute(
        "UPDATE messages SET pair_seq = numbered.seq FROM (SELECT id, row_number() OVER"
        " (PARTITION BY sender_id, recipient_id ORDER BY id) AS seq FROM messages) AS numbered"
        " WHERE messages.id = numbered.id"
    )
    op.execute(
        "INSERT INTO events (user_id, pos, kind, message_id, at)"
        " SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY message_id),"
        " 'message', message_id, sent_at FROM ("
        " SELECT recipient_id AS user_id, id AS message_id, sent_at FROM messages UNION"
        " SELECT sender_id, id, sent_at FROM messages WHERE sender_id IN (SELECT id FROM users)"
        ") AS involved"
    )
    op.execute(
        "UPDATE messages SET recipient_pos = e.pos FROM events AS e"
        " WHERE e.user_id = messages.recipient_id AND e.message_id = messages.id"
    )
    op.execute(
        "UPDATE messages SET sender_pos = e.pos FROM events AS e"
        " WHERE e.user_id = messages.sender_id AND e.message_id = messages.id"
    )
    op.execute(
        "UPDATE users SET event_pos = coalesce((SELECT max(pos) FROM events"
        " WHERE events.user_id = users.id), 0)"
    )
    op.execute(
        "INSERT INTO conversations (user_id, peer_id, last_message_id, received_count,"
        " unread_count) SELECT user_id, peer_id, max(id), sum(received),"
        " sum(CASE WHEN user_id = peer_id THEN 0 ELSE received END) FROM ("
        " SELECT recipient_id AS user_id, sender_id AS peer_id, id, 1 AS received"
        " FROM messages UNION ALL"
        " SELECT sender_id, recipient_id, id, 0 FROM messages"
        " WHERE sender_id <> recipient_id AND sender_id IN (SELECT id FROM users)"
        ") AS involved GROUP BY user_id, peer_id"
    )
    op.execute(
        "UPDATE users SET unread_total = coalesce((SELECT sum(unread_count) FROM conversations"
        " WHERE conversations.user_id = users.id), 0)"
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("conversations")
    op.drop_index("ix_messages_pair", table_name="messages")
    with op.batch_alter_table("messages") as batch_op:
        for column in ("pair_seq", "sender_pos", "recipient_pos"):
            batch_op.drop_column(column)
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("event_pos")
        batch_op.drop_column("unread_total")
