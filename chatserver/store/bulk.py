"""Bulk loading (``chatserver bulk-load``): many messages in one transaction."""

from __future__ import annotations

from typing import NamedTuple

from chatserver.db import Conn
from chatserver.store.messages import UPSERT_CONVERSATION

# ---------------------------------------------------------------- bulk loading


async def reserve_received(conn: Conn, recipient_id: int, count: int, unread: bool) -> int | None:
    """Count ``count`` new received messages at once (unread in conversations unless the
    user wrote to themself); return the first sequence number."""
    last = await conn.fetch_val(
        "UPDATE users SET received_count = received_count + $2,"
        " unread_count = unread_count + $2, unread_total = unread_total + $3"
        " WHERE id = $1 RETURNING received_count",
        recipient_id,
        count,
        count if unread else 0,
    )
    return None if last is None else int(last) - count + 1


async def add_sent(conn: Conn, sender_id: int, count: int) -> bool:
    sql = "UPDATE users SET sent_count = sent_count + $2 WHERE id = $1"
    return await conn.execute(sql, sender_id, count) == 1


class BulkMessage(NamedTuple):
    sender_id: int
    recipient_id: int
    body: str
    sent_at: int
    recipient_seq: int
    peer_lo: int
    peer_hi: int
    conversation_seq: int
    pair_seq: int
    sender_pos: int
    recipient_pos: int


async def insert_messages(conn: Conn, rows: list[BulkMessage]) -> None:
    """Insert messages whose numbers and positions the caller reserved."""
    await conn.execute_many(
        "INSERT INTO messages (sender_id, recipient_id, body, sent_at, recipient_seq,"
        " peer_lo, peer_hi, conversation_seq, pair_seq, sender_pos, recipient_pos)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [tuple(row) for row in rows],
    )


async def latest_loaded_id(conn: Conn, recipient_id: int, first_seq: int) -> int:
    """The id of the latest of a recipient's messages from sequence number ``first_seq`` on
    (the messages carry their events' positions: nothing else to store)."""
    return int(
        await conn.fetch_val(
            "SELECT max(id) FROM messages WHERE recipient_id = $1 AND recipient_seq >= $2",
            recipient_id,
            first_seq,
        )
    )


async def count_many_in_conversations(
    conn: Conn, sender_id: int, recipient_id: int, last_message_id: int, count: int
) -> None:
    """``count_in_conversations`` for ``count`` messages at once."""
    if sender_id == recipient_id:
        rows = "($1, $1, $2, $3, 0)"
        await conn.execute(UPSERT_CONVERSATION.format(rows=rows), sender_id, last_message_id, count)
    else:
        rows = "($1, $2, $3, 0, 0), ($2, $1, $3, $4, $4)"
        sql = UPSERT_CONVERSATION.format(rows=rows)
        await conn.execute(sql, sender_id, recipient_id, last_message_id, count)
