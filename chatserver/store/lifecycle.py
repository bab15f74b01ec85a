"""A message after it is sent: edits, deletions (tombstones), reply targets."""

from __future__ import annotations

from chatserver.db import Conn
from chatserver.store.messages import MESSAGE_COLUMNS, MessageRow

# ---------------------------------------------------------------- edits and deletions


async def get_message(conn: Conn, message_id: int) -> MessageRow | None:
    row = await conn.fetch_one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id)
    return None if row is None else MessageRow(*row)


async def set_message_body(conn: Conn, message_id: int, body: str, now: int) -> MessageRow | None:
    """Replace a live message's text (only the latest is kept; the search index follows:
    a trigger on SQLite, the generated column on PostgreSQL); the message as it is now,
    or None when it is deleted."""
    row = await conn.fetch_one(
        "UPDATE messages SET body = $2, edited_at = $3 WHERE id = $1 AND deleted_at IS NULL"
        f" RETURNING {MESSAGE_COLUMNS}",
        message_id,
        body,
        now,
    )
    return None if row is None else MessageRow(*row)


async def tombstone_message(conn: Conn, message_id: int, now: int) -> MessageRow | None:
    """Make a message a tombstone: its text goes (from the row and the search index), its
    id, place, people, times and reply_to stay. The tombstone, or None when it already
    was one."""
    row = await conn.fetch_one(
        "UPDATE messages SET body = '', deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL"
        f" RETURNING {MESSAGE_COLUMNS}",
        message_id,
        now,
    )
    return None if row is None else MessageRow(*row)


async def reply_target_ok(conn: Conn, message_id: int, lo: int, hi: int) -> bool:
    """Whether a message exists in the conversation of users ``lo`` < = ``hi`` and is not
    deleted: what a reply may point at (a primary-key lookup)."""
    value = await conn.fetch_val(
        "SELECT 1 FROM messages WHERE id = $1 AND peer_lo = $2 AND peer_hi = $3"
        " AND deleted_at IS NULL",
        message_id,
        lo,
        hi,
    )
    return value is not None
