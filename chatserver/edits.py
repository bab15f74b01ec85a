"""Edits and deletions of sent messages: check -> write via store -> commit -> publish.

Only the sender may change a message: its recipient gets 403, anyone else 404 (they may
not learn that it exists). Each change is an event with a position for both users
(``edited``, ``deleted``); a replay joins the message's current state.

Lock order: the message row first (the UPDATE), then both users' rows in ascending id
order for their positions, as a fetch marking messages received does; a send never
locks an existing message. The same order everywhere means no deadlock on PostgreSQL.
"""

from __future__ import annotations

import msgspec

from chatserver import store
from chatserver.db import Conn
from chatserver.errors import Conflict, Forbidden, NotFound
from chatserver.events import DELETED, EDITED
from chatserver.schemas import MessageOut
from chatserver.services import Services, now_us
from chatserver.views import message_out

_encode = msgspec.json.Encoder().encode


async def edit_message(s: Services, user_id: int, message_id: int, text: str) -> MessageOut:
    """Replace the text of the caller's message; 409 once it is deleted."""
    now = now_us()
    async with s.db.transaction() as conn:
        await _changeable(conn, user_id, message_id)
        edited = await store.set_message_body(conn, message_id, text, now)
        if edited is None:
            raise Conflict("A deleted message cannot be edited")
        view = message_out(edited)
        positions = await _record(conn, edited, EDITED, now)
        await store.rewrite_idempotent_responses(conn, message_id, _encode(view).decode())
    _evict(s, message_id)
    s.events.publish_edited(view, positions)
    return view


async def delete_message(s: Services, user_id: int, message_id: int) -> None:
    """Make the caller's message a tombstone; deleting it again changes nothing."""
    now = now_us()
    async with s.db.transaction() as conn:
        await _changeable(conn, user_id, message_id)
        tombstone = await store.tombstone_message(conn, message_id, now)
        if tombstone is None:
            return  # already deleted
        positions = await _record(conn, tombstone, DELETED, now)
        view = _encode(message_out(tombstone)).decode()
        await store.rewrite_idempotent_responses(conn, message_id, view)
    _evict(s, message_id)
    s.events.publish_deleted(message_id, now, positions)


async def _changeable(conn: Conn, user_id: int, message_id: int) -> store.MessageRow:
    """The message, if the caller sent it: 403 for its recipient, 404 for anyone else."""
    message = await store.get_message(conn, message_id)
    if message is None or user_id not in (message.sender_id, message.recipient_id):
        raise NotFound(f"There is no message with id {message_id}")
    if user_id != message.sender_id:
        raise Forbidden("Only the sender of a message can change it")
    return message


async def _record(conn: Conn, message: store.MessageRow, kind: str, now: int) -> dict[int, int]:
    """A position for each user of the message still there (ascending ids, locking their
    rows) and the event at it; the positions by user."""
    positions = {}
    for uid in sorted({message.sender_id, message.recipient_id}):
        if (pos := await store.take_event_positions(conn, uid)) is not None:
            positions[uid] = pos
    await store.insert_events(
        conn,
        [store.NewEvent(uid, pos, kind, now, message.id) for uid, pos in positions.items()],
    )
    return positions


def _evict(s: Services, message_id: int) -> None:
    """Drop the old copy from this node's cache now, and from the others' (control
    channel); the old words leave the search index soon (searchindex.py)."""
    s.messages.forget(message_id)
    s.events.evict_message(message_id)
    s.note_search_change()
