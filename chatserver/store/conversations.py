"""Conversations and read marks."""

from __future__ import annotations

from typing import NamedTuple

from chatserver.db import Conn
from chatserver.store.users import user_counter

# ---------------------------------------------------------------- conversations


class ConversationRow(NamedTuple):
    user_id: int
    peer_id: int
    last_message_id: int
    received_count: int
    unread_count: int
    last_read_id: int
    peer_last_read_id: int  # 0 when the peer's row is gone (a deleted account)


# The peer's read mark comes from the peer's own row; a conversation with yourself has one
# row, which is both.
CONVERSATION_SELECT = (
    "SELECT c.user_id, c.peer_id, c.last_message_id, c.received_count, c.unread_count,"
    " c.last_read_id, coalesce(p.last_read_id, 0) FROM conversations c"
    " LEFT JOIN conversations p ON p.user_id = c.peer_id AND p.peer_id = c.user_id"
)


async def get_conversation(conn: Conn, user_id: int, peer_id: int) -> ConversationRow | None:
    row = await conn.fetch_one(
        f"{CONVERSATION_SELECT} WHERE c.user_id = $1 AND c.peer_id = $2", user_id, peer_id
    )
    return None if row is None else ConversationRow(*row)


async def list_conversations(
    conn: Conn, user_id: int, before: int | None, limit: int
) -> list[ConversationRow]:
    """A page of the user's conversations, latest message first (an index range)."""
    if before is None:
        sql = f"{CONVERSATION_SELECT} WHERE c.user_id = $1 ORDER BY c.last_message_id DESC LIMIT $2"
        rows = await conn.fetch_all(sql, user_id, limit)
    else:
        sql = (
            f"{CONVERSATION_SELECT} WHERE c.user_id = $1 AND c.last_message_id < $2"
            " ORDER BY c.last_message_id DESC LIMIT $3"
        )
        rows = await conn.fetch_all(sql, user_id, before, limit)
    return [ConversationRow(*row) for row in rows]


async def unread_total(conn: Conn, user_id: int) -> int:
    """Every conversation's unread count added up: the user's counter, kept by sends,
    fetches and read marks (see ``set_read_mark``)."""
    return await user_counter(conn, user_id, "unread_total")


async def received_up_to(conn: Conn, user_id: int, peer_id: int, up_to_id: int) -> int:
    """How many messages the peer sent the user with an id up to ``up_to_id`` (one seek on
    the conversation index). The latest message of the conversation up to that id knows:
    its ``pair_seq`` counts its own direction, and its ``conversation_seq`` both (both are
    dense, also after an account's deletion, which removes one direction whole)."""
    lo, hi = sorted((user_id, peer_id))
    value = await conn.fetch_val(
        "SELECT CASE WHEN sender_id = $3 THEN pair_seq ELSE conversation_seq - pair_seq END"
        " FROM messages WHERE peer_lo = $1 AND peer_hi = $2 AND id <= $4"
        " ORDER BY id DESC LIMIT 1",
        lo,
        hi,
        peer_id,
        up_to_id,
    )
    return int(value or 0)


async def set_read_mark(conn: Conn, user_id: int, peer_id: int, up_to_id: int, unread: int) -> bool:
    """Move the user's read mark forward (never back) and set the conversation's unread
    count, keeping the user's total in step; False when the mark did not move."""
    moved = await conn.fetch_val(
        "UPDATE conversations SET last_read_id = $3, unread_count = $4"
        " WHERE user_id = $1 AND peer_id = $2 AND last_read_id < $3"
        " RETURNING last_read_id",
        user_id,
        peer_id,
        up_to_id,
        unread,
    )
    return moved is not None


async def add_to_unread_total(conn: Conn, user_id: int, change: int) -> None:
    await conn.execute(
        "UPDATE users SET unread_total = unread_total + $2 WHERE id = $1", user_id, change
    )
