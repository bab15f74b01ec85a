"""Each user's events, by position: what streams replay."""

from __future__ import annotations

import itertools
from typing import NamedTuple

from chatserver.db import Conn, Row, placeholders
from chatserver.store.messages import MessageRow

# ---------------------------------------------------------------- events


class EventRow(NamedTuple):
    """One stored event, with its message's current state when it is a message event."""

    pos: int
    kind: str
    by_id: int | None
    of_id: int | None
    up_to_id: int | None
    message_ids: str | None
    at: int
    message: MessageRow | None


class NewEvent(NamedTuple):
    user_id: int
    pos: int
    kind: str
    at: int
    message_id: int | None = None
    by_id: int | None = None
    of_id: int | None = None
    up_to_id: int | None = None
    message_ids: str | None = None


async def insert_events(conn: Conn, events: list[NewEvent]) -> None:
    """Store events (in one statement for the usual one or two)."""
    width = len(NewEvent._fields)
    rows = ", ".join(f"({placeholders(1 + i * width, width)})" for i in range(len(events)))
    await conn.execute(
        "INSERT INTO events (user_id, pos, kind, at, message_id, by_id, of_id, up_to_id,"
        f" message_ids) VALUES {rows}",
        *[value for event in events for value in event],
    )


async def list_events(conn: Conn, user_id: int, after_pos: int, limit: int) -> list[EventRow]:
    """The user's events after a position, oldest first: an index range on (user, pos)."""
    rows = await conn.fetch_all(
        "SELECT e.pos, e.kind, e.by_id, e.of_id, e.up_to_id, e.message_ids, e.at,"
        " m.id, m.sender_id, m.recipient_id, m.body, m.sent_at, m.received_at, m.edited_at,"
        " m.deleted_at, m.reply_to"
        " FROM events e LEFT JOIN messages m ON m.id = e.message_id"
        " WHERE e.user_id = $1 AND e.pos > $2 ORDER BY e.pos LIMIT $3",
        user_id,
        after_pos,
        limit,
    )
    return [_event_row(row) for row in rows]


def _event_row(row: Row) -> EventRow:
    message = MessageRow(*row[7:]) if row[7] is not None else None
    pos, kind, by_id, of_id, up_to_id, message_ids, at = row[:7]
    return EventRow(pos, kind, by_id, of_id, up_to_id, message_ids, at, message)


async def event_pos_after_message(conn: Conn, user_id: int, after_id: int) -> int:
    """The position after which a stream resuming from message ``after_id`` starts: that of
    the user's latest message with an id up to it (ids and positions go in the same order
    for a user), or 0."""
    positions = [
        await conn.fetch_val(
            f"SELECT {pos} FROM messages WHERE {column} = $1 AND id <= $2 ORDER BY id DESC LIMIT 1",
            user_id,
            after_id,
        )
        for column, pos in (("recipient_id", "recipient_pos"), ("sender_id", "sender_pos"))
    ]
    return max(int(p or 0) for p in positions)


async def delete_oldest_events(conn: Conn, cutoff: int, limit: int) -> int:
    """Delete up to ``limit`` of the oldest events (in id order, which is time order) that
    are older than ``cutoff``; how many (fewer than ``limit``: none that old is left).

    A range on the primary key, so no index on ``at`` has to be kept by every send; an
    event a little older than one kept after it waits for the next round (retention keeps
    at least what it promises)."""
    rows = await conn.fetch_all("SELECT id, at FROM events ORDER BY id LIMIT $1", limit)
    old = [int(row[0]) for row in itertools.takewhile(lambda row: row[1] < cutoff, rows)]
    if old:
        await conn.execute("DELETE FROM events WHERE id <= $1", old[-1])
    return len(old)
