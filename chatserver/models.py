"""The tables, defined once with SQLAlchemy; Alembic migrations create them on both engines.

Times are stored as integer microseconds since the Unix epoch (UTC): the same type on SQLite
and PostgreSQL, cheap to compare and index, and converted to RFC 3339 only at the API edge.

Per-user counters (``received_count``, ``unread_count``) keep inbox counts O(1), and each
received message carries ``recipient_seq`` (1, 2, 3 … per recipient) so any inbox page is an
index range, not an OFFSET scan. A recipient's messages are only ever deleted all together
(when the recipient deletes their account), so the sequence stays dense. Likewise each
message carries ``conversation_seq`` (1, 2, 3 … per pair of users), so a conversation's count
is its latest message's number; deleting an account renumbers the messages it leaves in its
conversations.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()


users = Table(
    "users",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("username", String(30), nullable=False),
    # casefolded copies, computed in Python so both engines agree on "ignoring case"
    Column("username_key", String(120), nullable=False, unique=True),
    Column("email", String(254), nullable=False),
    Column("email_key", String(254), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("date_joined", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=True),
    Column("received_count", BigInteger, nullable=False, server_default="0"),
    Column("unread_count", BigInteger, nullable=False, server_default="0"),
    Column("sent_count", BigInteger, nullable=False, server_default="0"),
    # every conversation's unread_count added up (for a tab title, without a scan)
    Column("unread_total", BigInteger, nullable=False, server_default="0"),
    # the position of the user's latest event (see ``events``)
    Column("event_pos", BigInteger, nullable=False, server_default="0"),
    # SQLite needs AUTOINCREMENT so that ids of deleted rows are never handed out again.
    sqlite_autoincrement=True,
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    # sha256 of the token: the token itself is never stored
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    # SQLite needs AUTOINCREMENT so that ids of deleted rows are never handed out again.
    sqlite_autoincrement=True,
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    # no foreign key: a deleted sender's messages stay, with the same sent_by id
    Column("sender_id", BigInteger, nullable=False),
    Column("recipient_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("body", Text, nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=True),
    Column("recipient_seq", BigInteger, nullable=False),
    # the conversation, as (smaller user id, larger user id), for ?with= reads
    Column("peer_lo", BigInteger, nullable=False),
    Column("peer_hi", BigInteger, nullable=False),
    Column("conversation_seq", BigInteger, nullable=False, server_default="0"),
    # the message's number among those from this sender to this recipient (1, 2, 3 …)
    Column("pair_seq", BigInteger, nullable=False, server_default="0"),
    # the position of its event in the sender's and the recipient's streams
    Column("sender_pos", BigInteger, nullable=False, server_default="0"),
    Column("recipient_pos", BigInteger, nullable=False, server_default="0"),
    # edits keep only the latest text; a deleted message keeps its place with an empty body
    Column("edited_at", BigInteger, nullable=True),
    Column("deleted_at", BigInteger, nullable=True),
    # the message of the same conversation this one answers
    Column("reply_to", BigInteger, nullable=True),
    # The search index is not declared here: an FTS5 table kept by triggers (SQLite) or a
    # generated tsvector column with a GIN index (PostgreSQL); see migration 0005.
    Index("ix_messages_recipient_seq", "recipient_id", "recipient_seq", unique=True),
    Index("ix_messages_recipient_id", "recipient_id", "id"),
    Index("ix_messages_sender_id", "sender_id", "id"),
    Index("ix_messages_conversation", "peer_lo", "peer_hi", "id"),
    # a read mark's unread count: the latest message from one sender at or below an id
    Index("ix_messages_pair", "recipient_id", "sender_id", "id"),
    # only the unread messages: ?unread=true stays an index range however big the inbox
    Index(
        "ix_messages_unread",
        "recipient_id",
        "id",
        sqlite_where=text("received_at IS NULL"),
        postgresql_where=text("received_at IS NULL"),
    ),
    # SQLite needs AUTOINCREMENT so that ids of deleted rows are never handed out again.
    sqlite_autoincrement=True,
)

conversations = Table(
    "conversations",
    metadata,
    # one row per user and person they exchanged messages with (a conversation has two)
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    # no foreign key: the peer's account may be deleted, the conversation stays
    Column("peer_id", BigInteger, primary_key=True),
    Column("last_message_id", BigInteger, nullable=False),
    # messages from the peer to the user, and how many of them are above last_read_id
    Column("received_count", BigInteger, nullable=False, server_default="0"),
    Column("unread_count", BigInteger, nullable=False, server_default="0"),
    Column("last_read_id", BigInteger, nullable=False, server_default="0"),
    Index("ix_conversations_latest", "user_id", "last_message_id"),
)

events = Table(
    "events",
    metadata,
    # In insertion order, which is time order: retention deletes the oldest ids in chunks,
    # without an index on ``at`` for every send to keep up.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    # a user's events, numbered 1, 2, 3 … (``users.event_pos`` is the latest): what a
    # stream replays after a position. A message event points at the message, so a replay
    # shows its current state.
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("pos", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("message_id", BigInteger, nullable=True),
    # received: who fetched (by) the messages listed; read: by, of (whose messages), up_to_id
    Column("by_id", BigInteger, nullable=True),
    Column("of_id", BigInteger, nullable=True),
    Column("up_to_id", BigInteger, nullable=True),
    Column("message_ids", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
    Index("ix_events_user_pos", "user_id", "pos", unique=True),
    # SQLite needs AUTOINCREMENT so that ids of deleted rows are never handed out again.
    sqlite_autoincrement=True,
)

blocks = Table(
    "blocks",
    metadata,
    # the blocker's sends and history stay; the blocked user cannot send to the blocker,
    # and sees neither their presence nor last_seen_at
    Column("blocker_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("blocked_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("since", BigInteger, nullable=False),
    # "who blocks me" among a page of users (profiles, conversations)
    Index("ix_blocks_blocked", "blocked_id", "blocker_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("sender_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    # sha256 of the request body, to tell a true repeat from a different request
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False, index=True),
    # the message the response holds: a deletion rewrites the response to the tombstone
    Column("message_id", BigInteger, nullable=True, index=True),
)
