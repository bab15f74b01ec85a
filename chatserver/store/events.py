"""Each user's events, by position: what streams replay."""

from __future__ import annotations

import itertools
from functools import lru_cache
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


@lru_cache(maxsize=8)
def _insert_events_sql(count: int) -> str:
    width = len(NewEvent._fields)
    rows = ", ".join(f"({placeholders(1 + i * width, width)})" for i in range(count))
    return (
        "INSERT INTO events (user_id, pos, kind, at, message_id, by_id, of_id, up_to_id,"
        f" message_ids) VALUES {rows}"
    )


async def insert_events(conn: Conn, events: list[NewEvent]) -> None:
    """Store events (in one statement for the usual one or two). Message events are not
    stored here: a message carries its positions (see ``list_events``)."""
    await conn.execute(
        _insert_events_sql(len(events)), *[value for event in events for value in event]
    )


_MESSAGE = (
    "m.id, m.sender_id, m.recipient_id, m.body, m.sent_at, m.received_at, m.edited_at,"
    " m.deleted_at, m.reply_to"
)
# A message event's columns of the events table (typed: PostgreSQL makes a bare NULL text).
_NO_DETAILS = "'message', CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),"
_NO_IDS = "CAST(NULL AS TEXT)"
# A user's events after a position, oldest first, from the three places they live: the
# events table (every kind but new messages), the messages they sent and those they received
# (each at its position in that user's stream; a message to oneself is one event). Each
# part is an index range that stops at the limit; the union of those is sorted.
LIST_EVENTS = (
    "SELECT * FROM (SELECT e.pos, e.kind, e.by_id, e.of_id, e.up_to_id, e.message_ids, e.at,"
    f" {_MESSAGE} FROM events e LEFT JOIN messages m ON m.id = e.message_id"
    " WHERE e.user_id = $1 AND e.pos > $2 ORDER BY e.pos LIMIT $3) AS stored"
    f" UNION ALL SELECT * FROM (SELECT m.sender_pos, {_NO_DETAILS} {_NO_IDS}, m.sent_at,"
    f" {_MESSAGE} FROM messages m WHERE m.sender_id = $1 AND m.sender_pos > $2"
    " ORDER BY m.sender_pos LIMIT $3) AS sent"
    f" UNION ALL SELECT * FROM (SELECT m.recipient_pos, {_NO_DETAILS} {_NO_IDS}, m.sent_at,"
    f" {_MESSAGE} FROM messages m WHERE m.recipient_id = $1"
    " AND m.recipient_pos > $2 AND m.sender_id <> $1 ORDER BY m.recipient_pos LIMIT $3)"
    " AS received ORDER BY 1 LIMIT $3"
)


async def list_events(conn: Conn, user_id: int, after_pos: int, limit: int) -> list[EventRow]:
    """The user's events after a position, oldest first (see ``LIST_EVENTS``). Positions
    may skip: a message deleted with its recipient's account leaves no event."""
    rows = await conn.fetch_all(LIST_EVENTS, user_id, after_pos, limit)
    return [_event_row(row) for row in rows]


def _event_row(row: Row) -> EventRow:
    message = MessageRow(*row[7:]) if row[7] is not None else None
    pos, kind, by_id, of_id, up_to_id, message_ids, at = row[:7]
    return EventRow(pos, kind, by_id, of_id, up_to_id, message_ids, at, message)


async def event_pos_after_message(conn: Conn, user_id: int, after_id: int) -> int:
    """The position after which a stream resuming from message ``after_id`` starts: that of
    the user's latest message with an id up to it (ids and positions go in the same order
    for a user), or 0. Sent messages are indexed by position: that side walks back from the
    newest, over the messages the stream then replays anyway."""
    received = await conn.fetch_val(
        "SELECT recipient_pos FROM messages WHERE recipient_id = $1 AND id <= $2"
        " ORDER BY id DESC LIMIT 1",
        user_id,
        after_id,
    )
    sent = await conn.fetch_val(
        "SELECT sender_pos FROM messages WHERE sender_id = $1 AND id <= $2"
        " ORDER BY sender_pos DESC LIMIT 1",
        user_id,
        after_id,
    )
    return max(int(received or 0), int(sent or 0))


# Where the retention's mark lives: a row at position 0 (never replayed: positions start
# at 1) holding, in up_to_id, the latest of the user's positions whose event was deleted.
GONE = "gone"


async def events_gone_up_to(conn: Conn, user_id: int) -> int:
    """The latest position of the user's whose stored event was deleted as too old (0 when
    none was): resuming from before it would miss it."""
    value = await conn.fetch_val(
        "SELECT up_to_id FROM events WHERE user_id = $1 AND pos = 0", user_id
    )
    return int(value or 0)


async def delete_oldest_events(conn: Conn, cutoff: int, limit: int) -> int:
    """Delete up to ``limit`` of the oldest stored events (in id order, which is time
    order) that are older than ``cutoff``, moving each user's mark (``events_gone_up_to``);
    how many (fewer than ``limit``: none that old is left). Message events stay as long as
    their message.

    A range on the primary key, so no index on ``at`` has to be kept by every send; an
    event a little older than one kept after it waits for the next round (retention keeps
    at least what it promises)."""
    rows = await conn.fetch_all(
        "SELECT id, at FROM events WHERE pos > 0 ORDER BY id LIMIT $1", limit
    )
    old = [int(row[0]) for row in itertools.takewhile(lambda row: row[1] < cutoff, rows)]
    if old:
        await conn.execute(
            "INSERT INTO events (user_id, pos, kind, up_to_id, at)"
            f" SELECT user_id, 0, '{GONE}', max(pos), 0 FROM events WHERE id <= $1 AND pos > 0"
            " GROUP BY user_id ON CONFLICT (user_id, pos) DO UPDATE SET up_to_id = CASE"
            " WHEN excluded.up_to_id > events.up_to_id THEN excluded.up_to_id"
            " ELSE events.up_to_id END",
            old[-1],
        )
        await conn.execute("DELETE FROM events WHERE id <= $1 AND pos > 0", old[-1])
    return len(old)
