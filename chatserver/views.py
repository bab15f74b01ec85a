"""Rows -> response Structs: the one place that decides what a client sees of a record."""

from __future__ import annotations

import msgspec

from chatserver.schemas import MessageOut, UserOut, to_datetime
from chatserver.store import MessageRow, UserRow


def user_out(user: UserRow, viewer_id: int | None, online: bool) -> UserOut:
    """A user as ``viewer_id`` may see them: the email only for themself."""
    joined = to_datetime(user.date_joined)
    assert joined is not None
    return UserOut(
        id=user.id,
        username=user.username,
        date_joined=joined,
        last_seen_at=to_datetime(user.last_seen_at),
        online=online,
        email=user.email if viewer_id == user.id else msgspec.UNSET,
    )


class MessageViews:
    """Messages as encoded JSON, reused while a message's (id, received_at) match.

    A message never changes except for received_at, which is set once, and hot messages
    (the top of busy inboxes) are served again and again: a page then splices the stored
    bytes (``msgspec.Raw``) instead of converting and encoding every message again. One per
    app (ids are per database).
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self._max = max_entries
        self._views: dict[tuple[int, int | None], msgspec.Raw] = {}

    def json(self, message: MessageRow) -> msgspec.Raw:
        key = (message.id, message.received_at)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= self._max:
                self._views.clear()  # simpler than LRU bookkeeping, and rare
            view = self._views[key] = msgspec.Raw(_encode(message_out(message)))
        return view


_encode = msgspec.json.Encoder().encode


def message_out(message: MessageRow) -> MessageOut:
    sent_at = to_datetime(message.sent_at)
    assert sent_at is not None
    return MessageOut(
        id=message.id,
        sent_by=message.sender_id,
        received_by=message.recipient_id,
        message=message.body,
        sent_at=sent_at,
        received_at=to_datetime(message.received_at),
    )
