"""Real-time events: their payloads and the channel each goes to.

Every user has one channel, and every event a user can receive (but errors and ephemeral
ones) is stored with the user's position before it is published (see store/events.py).
The channels plugin carries it to every subscribed socket on this process, and, with the
Redis backend, on every other process and machine.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec
from litestar.channels import ChannelsPlugin

from chatserver import store
from chatserver.schemas import MessageOut, to_datetime
from chatserver.views import message_out

# Control events (revocations) go to every node, so each can evict caches and close sockets.
CONTROL_CHANNEL = "control"


def user_channel(user_id: int) -> str:
    return f"user:{user_id}"


# Events a user can receive. Each stored one carries ``pos``, the user's position: it
# increases strictly for that user, in the order the events happened for them (each is
# taken under the user's row lock, in the transaction that makes the change). msgspec
# writes the tag first, so every payload starts ``{"type":"…","pos":N`` (see ``pos_of``).


class MessageEvent(msgspec.Struct, tag="message", tag_field="type"):
    pos: int
    message: msgspec.Raw  # MessageOut, encoded once for every copy


class ReceivedEvent(msgspec.Struct, tag="received", tag_field="type"):
    """The recipient's client fetched these of my messages (delivered)."""

    pos: int
    message_ids: list[int]
    by: int
    at: datetime


class ReadEvent(msgspec.Struct, tag="read", tag_field="type"):
    """``by`` read ``of``'s messages up to ``up_to_id`` (sent to both users)."""

    pos: int
    by: int
    of: int
    up_to_id: int
    at: datetime


class EditedEvent(msgspec.Struct, tag="edited", tag_field="type"):
    """A message to or from me was edited (sent to both users); a replay shows its current
    state."""

    pos: int
    message: msgspec.Raw  # MessageOut


class DeletedEvent(msgspec.Struct, tag="deleted", tag_field="type"):
    """A message to or from me was deleted (sent to both users): it is now a tombstone."""

    pos: int
    message_id: int
    at: datetime


class ResetEvent(msgspec.Struct, tag="reset", tag_field="type"):
    """The position asked for is older than what is kept: refetch, then go on from ``pos``."""

    pos: int


POS_MARK = b',"pos":'


def pos_of(payload: bytes) -> int | None:
    """The position of an encoded event, read from its fixed prefix; None for an event
    without one (errors, ephemeral events)."""
    start = payload.find(POS_MARK, 0, 40)
    if start < 0:
        return None
    start += len(POS_MARK)
    end = start
    while payload[end : end + 1].isdigit():
        end += 1
    return int(payload[start:end])


def is_message_event(payload: bytes) -> bool:
    return payload.startswith(b'{"type":"message"')


def encode_message_event(pos: int, message: msgspec.Raw) -> bytes:
    return _encode(MessageEvent(pos, message))


def render(row: store.EventRow) -> bytes | None:
    """A stored event as the client receives it; None for a message that no longer exists
    (its recipient deleted their account)."""
    at = to_datetime(row.at)
    assert at is not None
    if row.kind == MESSAGE:
        if row.message is None:
            return None
        return encode_message_event(row.pos, msgspec.Raw(_encode(message_out(row.message))))
    if row.kind in (EDITED, DELETED):
        return _render_change(row, at)
    if row.kind == RECEIVED:
        assert row.by_id is not None
        assert row.message_ids is not None
        ids = msgspec.json.decode(row.message_ids, type=list[int])
        return _encode(ReceivedEvent(row.pos, ids, row.by_id, at))
    assert row.by_id is not None
    assert row.of_id is not None
    assert row.up_to_id is not None
    return _encode(ReadEvent(row.pos, row.by_id, row.of_id, row.up_to_id, at))


def _render_change(row: store.EventRow, at: datetime) -> bytes | None:
    """An edit or a deletion; None when the message is gone with its recipient's account."""
    if row.message is None:
        return None
    if row.kind == DELETED:
        return _encode(DeletedEvent(row.pos, row.message.id, at))
    return _encode(EditedEvent(row.pos, msgspec.Raw(_encode(message_out(row.message)))))


MESSAGE, RECEIVED, READ = "message", "received", "read"
EDITED, DELETED = "edited", "deleted"


# Ephemeral events: no position, never stored, never replayed (a stream that was not open
# when one happened does not get it).


class TypingEvent(msgspec.Struct, tag="typing", tag_field="type"):
    """``user_id`` is typing to me; show it for 5 seconds unless another one comes."""

    user_id: int


class PresenceEvent(msgspec.Struct, tag="presence", tag_field="type"):
    """``user_id`` came online (their first stream opened) or went offline (their last
    one closed a grace period ago)."""

    user_id: int
    online: bool
    last_seen_at: datetime | None


class PresenceNotice(msgspec.Struct, tag="presence-notice", tag_field="type"):
    """Node to node, on the control channel: deliver a presence event to the streams of
    ``audience`` held here. One broker message per change, however many peers."""

    user_id: int
    online: bool
    last_seen_at: int | None  # µs
    audience: list[int]

    def event(self) -> bytes:
        return _encode(PresenceEvent(self.user_id, self.online, to_datetime(self.last_seen_at)))


class RevokeEvent(msgspec.Struct, tag="revoke", tag_field="type"):
    """A token (or, with token_hash None, every token) of a user stopped being valid."""

    user_id: int
    token_hash: str | None = None


class EvictEvent(msgspec.Struct, tag="evict", tag_field="type"):
    """A message changed (edited, deleted): every node drops its cached copy."""

    message_id: int


ControlEvent = RevokeEvent | EvictEvent


_encode = msgspec.json.Encoder().encode


class Events:
    """Publishes events after commits; a thin, typed layer over the channels plugin."""

    def __init__(
        self, channels: ChannelsPlugin, may_listen: Callable[[str], bool] = lambda _: True
    ) -> None:
        self.channels = channels
        self._may_listen = may_listen  # whether a channel may have a subscriber anywhere

    def publish(self, user_id: int, payload: bytes) -> None:
        """Publish one user's copy of an event (already committed), if anyone may listen."""
        channel = user_channel(user_id)
        if self._may_listen(channel):
            self.channels.publish(payload, channel)

    def publish_message(self, message: MessageOut, positions: store.Positions) -> None:
        """Each user's copy of a new message, at their own position (one copy when it is
        the same user)."""
        body = msgspec.Raw(_encode(message))
        self.publish(message.sent_by, encode_message_event(positions.sender, body))
        if message.received_by != message.sent_by:
            self.publish(message.received_by, encode_message_event(positions.recipient, body))

    def publish_received(self, by: int, events: list[tuple[int, int, list[int]]], at: int) -> None:
        """Tell each sender which of its messages ``by`` has now fetched:
        (sender, position, message ids) each."""
        when = to_datetime(at)
        assert when is not None
        for sender_id, pos, message_ids in events:
            self.publish(sender_id, _encode(ReceivedEvent(pos, message_ids, by, when)))

    def publish_read(
        self, by: int, of: int, up_to_id: int, at: int, positions: dict[int, int]
    ) -> None:
        """A read mark, to each user of the conversation at their position."""
        when = to_datetime(at)
        assert when is not None
        for user_id, pos in positions.items():
            self.publish(user_id, _encode(ReadEvent(pos, by, of, up_to_id, when)))

    def publish_edited(self, message: MessageOut, positions: dict[int, int]) -> None:
        """An edited message, to each user of its conversation at their position."""
        body = msgspec.Raw(_encode(message))
        for user_id, pos in positions.items():
            self.publish(user_id, _encode(EditedEvent(pos, body)))

    def publish_deleted(self, message_id: int, at: int, positions: dict[int, int]) -> None:
        """A deleted message's id, to each user of its conversation at their position."""
        when = to_datetime(at)
        assert when is not None
        for user_id, pos in positions.items():
            self.publish(user_id, _encode(DeletedEvent(pos, message_id, when)))

    def evict_message(self, message_id: int) -> None:
        """Tell every node to drop its cached copy of a changed message."""
        self.channels.publish(_encode(EvictEvent(message_id)), CONTROL_CHANNEL)

    def publish_typing(self, user_id: int, to: int) -> None:
        """``user_id`` is typing to ``to`` (ephemeral: not stored)."""
        self.publish(to, _encode(TypingEvent(user_id)))

    def publish_presence(self, notice: PresenceNotice) -> None:
        """A presence change, to every node (each delivers to the audience it holds)."""
        self.channels.publish(_encode(notice), CONTROL_CHANNEL)

    def revoke_token(self, user_id: int, token_hash: str) -> None:
        self.channels.publish(_encode(RevokeEvent(user_id, token_hash)), CONTROL_CHANNEL)

    def revoke_user(self, user_id: int) -> None:
        self.channels.publish(_encode(RevokeEvent(user_id)), CONTROL_CHANNEL)
