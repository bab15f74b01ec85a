"""Rows -> response Structs: the one place that decides what a client sees of a record."""

from __future__ import annotations

import msgspec

from chatserver.schemas import MessageOut, UserOut, to_datetime
from chatserver.store import MessageRow, UserRow


def user_out(user: UserRow, viewer_id: int | None, online: bool, hidden: bool = False) -> UserOut:
    """A user as ``viewer_id`` may see them: the email only for themself; neither
    last_seen_at nor online when the user blocks the viewer (``hidden``)."""
    joined = to_datetime(user.date_joined)
    assert joined is not None
    return UserOut(
        id=user.id,
        username=user.username,
        date_joined=joined,
        last_seen_at=None if hidden else to_datetime(user.last_seen_at),
        online=online and not hidden,
        email=user.email if viewer_id == user.id else msgspec.UNSET,
    )


class MessageCache:
    """Messages by id with their encoded JSON, for the read routes.

    A message changes when its recipient first fetches it (``received_at``) and when its
    sender edits or deletes it. An edit or a deletion evicts it here, on every node (the
    control channel; the whole cache is dropped when the broker comes back after an outage,
    as evictions may have been missed). A received message is otherwise final, so a read
    takes the ids of its page from an index alone
    and only the rows not held here from the table, which serves the inbox faster. A
    page splices the stored JSON (``msgspec.Raw``) instead of converting and encoding
    every message again. Bounded by the JSON it holds (the rows about double it): when
    full it starts over (simpler than LRU bookkeeping, and rare). One per app: ids are
    per database.
    """

    def __init__(self, max_bytes: int = 16 * 2**20) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: dict[int, tuple[MessageRow, msgspec.Raw]] = {}

    def received(self, message_ids: list[int]) -> dict[int, MessageRow | None]:
        """Each id, in order, with its message if held and already received (final)."""
        entries = self._entries
        found: dict[int, MessageRow | None] = {}
        for message_id in message_ids:
            entry = entries.get(message_id)
            found[message_id] = entry[0] if entry and entry[0].received_at is not None else None
        return found

    def forget(self, message_id: int) -> None:
        """Drop a message that changed (an edit, a deletion)."""
        entry = self._entries.pop(message_id, None)
        if entry is not None:
            self._bytes -= len(entry[1])

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def json(self, message: MessageRow) -> msgspec.Raw:
        entry = self._entries.get(message.id)
        if entry is not None and entry[0] == message:
            return entry[1]
        view = msgspec.Raw(_encode(message_out(message)))
        if entry is not None:
            self._bytes -= len(entry[1])
        elif self._bytes + len(view) > self._max_bytes:
            self._entries.clear()
            self._bytes = 0
        self._entries[message.id] = (message, view)
        self._bytes += len(view)
        return view


_encode = msgspec.json.Encoder().encode


def message_out(message: MessageRow) -> MessageOut:
    sent_at = to_datetime(message.sent_at)
    assert sent_at is not None
    return MessageOut(
        id=message.id,
        sent_by=message.sender_id,
        received_by=message.recipient_id,
        message=None if message.deleted_at is not None else message.body,
        sent_at=sent_at,
        received_at=to_datetime(message.received_at),
        edited_at=to_datetime(message.edited_at),
        deleted_at=to_datetime(message.deleted_at),
        reply_to=message.reply_to,
    )
