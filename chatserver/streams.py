"""A user's live feed: subscribe, replay from the database, then go live — no gap, no duplicate.

The order of steps is what makes resume exact:

1. Subscribe to the user's channel, and wait until the subscription is known to be active
   (a marker published on a private channel, subscribed in the same command, comes back).
2. Replay from the database every message to or from the user with an id above the cursor.
3. Deliver live events, skipping messages whose id the replay already covered.

A message committed after step 2 read the database is published after step 1 finished, so
it arrives live. One committed before is in the replay, and its live copy is dropped by id.
Per user, message ids become visible in id order (see models.py), so "id <= last replayed"
is exactly "already sent".

Live message events only say "read on": publishes race one another after their commits, so
they can arrive out of id order (a client resuming from the highest id it saw would then
skip the overtaken ones). The messages themselves are read from the database, oldest first,
up to and past the announced one; a burst costs one read, as the rest are then "already sent".
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgspec
from litestar.channels import ChannelsPlugin, Subscriber

from chatserver import store
from chatserver.events import MessageEvent, user_channel
from chatserver.services import Services
from chatserver.views import message_out

REPLAY_PAGE = 500
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
MESSAGE_PREFIX = b'{"type":"message","message":{"id":'
_encode = msgspec.json.Encoder().encode


class StreamUnavailable(Exception):
    """The broker did not confirm the subscription in time (Redis down?)."""


class BoundedSubscriber(Subscriber):
    """A subscriber whose queue overflowing is noticed, never silently dropped."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.overflowed = asyncio.Event()

    def put_nowait(self, item: bytes | None) -> bool:
        accepted = super().put_nowait(item)
        if not accepted:
            self.overflowed.set()
        return accepted

    async def put(self, item: bytes | None) -> None:
        """Never wait: ``ChannelsPlugin.unsubscribe`` puts a stop sentinel with ``put``,
        which would block forever on the full queue of a lagging stream."""
        self.put_nowait(item)

    async def get(self) -> bytes | None:
        return await self._queue.get()


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event for a client: the JSON payload, and the message id when it is a message."""

    payload: bytes
    message_id: int | None


def message_id_of(payload: bytes) -> int | None:
    """The id of a message event, read from its fixed prefix without decoding the JSON."""
    if not payload.startswith(MESSAGE_PREFIX):
        return None
    end = payload.index(b",", len(MESSAGE_PREFIX))
    return int(payload[len(MESSAGE_PREFIX) : end])


@dataclass(slots=True)
class Subscription:
    """An active subscription; ``pending`` holds live events that overtook the marker."""

    subscriber: BoundedSubscriber
    pending: deque[bytes]

    async def next_payload(self) -> bytes:
        while True:
            payload = self.pending.popleft() if self.pending else await self.subscriber.get()
            if payload is not None:
                return payload

    async def next_message_event(self) -> None:
        """Wait until a message event (to or from the user) arrives."""
        while message_id_of(await self.next_payload()) is None:
            pass


@asynccontextmanager
async def subscription(channels: ChannelsPlugin, user_id: int) -> AsyncIterator[Subscription]:
    """Subscribe to a user's channel and return once the subscription is surely active."""
    marker_channel = f"sync:{secrets.token_hex(8)}"
    subscriber = await channels.subscribe([user_channel(user_id), marker_channel])
    assert isinstance(subscriber, BoundedSubscriber)
    try:
        early = await _await_marker(channels, subscriber, marker_channel)
        await channels.unsubscribe(subscriber, [marker_channel])
        yield Subscription(subscriber, deque(early))
    finally:
        await channels.unsubscribe(subscriber)


async def _await_marker(
    channels: ChannelsPlugin, subscriber: BoundedSubscriber, channel: str
) -> list[bytes]:
    marker = channel.encode()
    channels.publish(marker, channel)
    early: list[bytes] = []
    try:
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
            while (payload := await subscriber.get()) != marker:
                if payload is not None:
                    early.append(payload)
    except TimeoutError:
        raise StreamUnavailable("the message broker did not confirm the subscription") from None
    return early


class Feed:
    """Replay, then live events, for one user; ``next()`` is safe to cancel (timeouts)."""

    def __init__(
        self, services: Services, subscription: Subscription, user_id: int, after_id: int
    ) -> None:
        self._services = services
        self._subscription = subscription
        self._user_id = user_id
        self._cursor = after_id
        self._replay: deque[StreamEvent] = deque()
        self._replaying = True

    async def next(self) -> StreamEvent:
        """The next event; safe to cancel (a pending queue read loses nothing)."""
        while True:
            while self._replaying and not self._replay:
                await self._load_replay_page()
            if self._replay:
                return self._replay.popleft()
            if (event := await self._next_live()) is not None:
                return event

    async def _load_replay_page(self) -> None:
        async with self._services.db.read() as conn:
            rows = await store.list_involving(conn, self._user_id, self._cursor, REPLAY_PAGE)
        for row in rows:
            self._replay.append(StreamEvent(_encode(MessageEvent(message_out(row))), row.id))
            self._cursor = row.id
        self._replaying = len(rows) == REPLAY_PAGE

    async def _next_live(self) -> StreamEvent | None:
        """The next live event, or None when a new message means: read the database."""
        while True:
            payload = await self._subscription.next_payload()
            message_id = message_id_of(payload)
            if message_id is None:
                return StreamEvent(payload, None)
            if message_id > self._cursor:
                self._replaying = True  # it, and any it overtook, come from the database
                return None
