"""Real-time events: their payloads and the channel each goes to.

Every user has one channel; an event is encoded once and published to the channels of
everyone who should see it. The channels plugin carries it to every subscribed socket on
this process, and, with the Redis backend, on every other process and machine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime

import msgspec
from litestar.channels import ChannelsPlugin

from chatserver.schemas import MessageOut, to_datetime

# Control events (revocations) go to every node, so each can evict caches and close sockets.
CONTROL_CHANNEL = "control"


def user_channel(user_id: int) -> str:
    return f"user:{user_id}"


class MessageEvent(msgspec.Struct, tag="message", tag_field="type"):
    message: MessageOut


class ReceivedEvent(msgspec.Struct, tag="received", tag_field="type"):
    message_ids: list[int]
    by: int
    at: datetime


class RevokeEvent(msgspec.Struct, tag="revoke", tag_field="type"):
    """A token (or, with token_hash None, every token) of a user stopped being valid."""

    user_id: int
    token_hash: str | None = None


_encode = msgspec.json.Encoder().encode


class Events:
    """Publishes events after commits; a thin, typed layer over the channels plugin."""

    def __init__(
        self, channels: ChannelsPlugin, may_listen: Callable[[str], bool] = lambda _: True
    ) -> None:
        self.channels = channels
        self._may_listen = may_listen  # whether a channel may have a subscriber anywhere

    def wants_order_hints(self, *user_ids: int) -> bool:
        """Whether a send should look up its order hints: someone may be streaming."""
        return any(self._may_listen(user_channel(user_id)) for user_id in user_ids)

    def publish_message(self, message: MessageOut, previous: dict[int, int] | None) -> None:
        """Publish a message, rendered once by the caller for its own response.

        With ``previous`` (user id -> their message before this one), each user's copy
        starts with that id and a space: the order hint streams use (streams.py).
        Nothing is rendered or queued for a user nobody can be streaming (the check and
        the publish run in one step of the loop, so a stream cannot subscribe between them;
        one that subscribes later reads the committed message from the database)."""
        users = self._listened({message.sent_by, message.received_by})
        if not users:
            return
        data = _encode(MessageEvent(message))
        if previous is None:
            self.channels.publish(data, [user_channel(user_id) for user_id in users])
            return
        for user_id in users:
            self.channels.publish(b"%d %s" % (previous[user_id], data), user_channel(user_id))

    def publish_received(self, by: int, marked: list[tuple[int, int]], at: int) -> None:
        """Tell each sender which of its messages ``by`` has now fetched."""
        by_sender: dict[int, list[int]] = defaultdict(list)
        for message_id, sender_id in marked:
            by_sender[sender_id].append(message_id)
        when = to_datetime(at)
        assert when is not None
        for sender_id in self._listened(by_sender):
            event = ReceivedEvent(by_sender[sender_id], by, when)
            self.channels.publish(_encode(event), user_channel(sender_id))

    def _listened(self, user_ids: Iterable[int]) -> list[int]:
        """The users among ``user_ids`` whose channel may have a subscriber somewhere."""
        return [user_id for user_id in user_ids if self._may_listen(user_channel(user_id))]

    def revoke_token(self, user_id: int, token_hash: str) -> None:
        self.channels.publish(_encode(RevokeEvent(user_id, token_hash)), CONTROL_CHANNEL)

    def revoke_user(self, user_id: int) -> None:
        self.channels.publish(_encode(RevokeEvent(user_id)), CONTROL_CHANNEL)
