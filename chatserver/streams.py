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

Publishes race one another after their commits, so live events can arrive out of id order
(a client resuming from the highest id it saw would then skip the overtaken ones). Order
hints make the common case cheap: a send that may have listeners looks up each user's
previous message id under the same row locks that order its own id, and the user's copy of
the event starts with it (``b"<previous id> {json}"``). When that previous id is exactly
the stream's cursor, nothing can be missing in between, and the event is sent as it is.
Otherwise (an overtaken event, or no hint) the event only says "read on": the messages are
read from the database, oldest first, up to and past the announced one; a burst costs one
read, as the rest are then "already sent".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Any, NamedTuple

import msgspec
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend

from chatserver import store
from chatserver.events import MessageEvent, user_channel
from chatserver.services import Services
from chatserver.views import message_out

log = logging.getLogger("chatserver")
REPLAY_PAGE = 500
# How long a new stream waits for the broker to confirm its subscription. Generous: when
# thousands of clients reconnect to one node at once, their markers queue behind each other
# (one Redis round trip each), and a stream given up on only reconnects and adds to the storm.
SUBSCRIBE_TIMEOUT_SECONDS = 30.0
MESSAGE_PREFIX = b'{"type":"message","message":{"id":'
_encode = msgspec.json.Encoder().encode


class StreamUnavailable(Exception):
    """The broker did not confirm the subscription in time (Redis down?)."""


class BoundedSubscriber(Subscriber):
    """A subscriber with a small bounded queue whose overflow is noticed, never dropped.

    It does not build Subscriber's asyncio.Queue (four deques and an Event): idle sockets
    are most of what a chat server holds, so a list and one waiter are enough.
    """

    def __init__(
        self, plugin: ChannelsPlugin, max_backlog: int | None = None, backlog_strategy: str = ""
    ) -> None:
        self._task = None
        self._plugin = plugin
        self._backend = plugin._backend  # as Subscriber.__init__ does
        # A list until it holds something: most sockets are idle, and an empty list is
        # much smaller than an empty deque.
        self._items: list[bytes | None] = []
        self._waiter: asyncio.Future[None] | None = None
        self._max = max_backlog or 0
        self.channels: set[str] = set()
        # Called when the queue overflows: the stream then ends (close code 1013).
        self.on_overflow: Callable[[], None] | None = None
        # Called after an item is queued: a WebSocket's sender starts only then (api/stream.py).
        self.on_item: Callable[[], None] | None = None

    def put_nowait(self, item: bytes | None) -> bool:
        if self._max and len(self._items) >= self._max:
            if self.on_overflow is not None:
                self.on_overflow()
            return False
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.on_item is not None:
            self.on_item()
        return True

    async def put(self, item: bytes | None) -> None:
        """Never wait: ``ChannelsPlugin.unsubscribe`` puts a stop sentinel with ``put``,
        which would block forever on the full queue of a lagging stream."""
        self.put_nowait(item)

    async def wait(self) -> None:
        """Return once an item is queued."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def pop_event(self) -> bytes | None:
        """The next queued item, or None when there is none (end-of-queue sentinels skipped)."""
        while self._items:
            if (item := self._items.pop(0)) is not None:
                return item
        return None

    async def get(self) -> bytes | None:
        await self.wait()
        return self._items.pop(0)

    @property
    def qsize(self) -> int:
        return len(self._items)

    async def iter_events(self) -> AsyncGenerator[bytes, None]:
        while (item := await self.get()) is not None:
            yield item


class ChatChannels(ChannelsPlugin):
    """Litestar's channels plugin, with unsubscribing that stays cheap at scale.

    The stock ``unsubscribe`` scans every channel ever used and never forgets an empty one:
    with one channel per user plus one marker channel per stream opened, that grows without
    bound. Here a subscriber knows its channels, and empty channels are dropped.
    """

    async def _pub_worker(self) -> None:
        """Publish whatever is queued as one batch (overrides Litestar's worker, which
        awaits one broker round trip per event: on a busy node that was one event per
        event-loop turn, and deliveries fell behind)."""
        while (queue := self._pub_queue) is not None:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            try:
                if isinstance(self._backend, ChatRedisBackend):
                    await self._backend.publish_many(batch)
                else:
                    for data, channels in batch:
                        await self._backend.publish(data, channels)
            except Exception:  # broker trouble: these events are lost, streams resume by id
                log.exception("publishing %d events failed", len(batch))
            finally:
                for _ in batch:
                    queue.task_done()

    def may_have_listeners(self, channel: str) -> bool:
        """False only when nobody anywhere can be subscribed: the in-process backend, and
        no subscriber here. (With Redis, other nodes' subscribers are unknown.)"""
        return not isinstance(self._backend, MemoryChannelsBackend) or channel in self._channels

    async def subscribe(self, channels: str | Iterable[str], history: int | None = None) -> Any:
        names = [channels] if isinstance(channels, str) else list(channels)
        subscriber = await super().subscribe(names, history)
        if isinstance(subscriber, BoundedSubscriber):
            subscriber.channels.update(names)
        return subscriber

    async def unsubscribe(
        self, subscriber: Subscriber, channels: str | Iterable[str] | None = None
    ) -> None:
        if not isinstance(subscriber, BoundedSubscriber):
            await super().unsubscribe(subscriber, channels)
            return
        names = (
            subscriber.channels.copy()
            if channels is None
            else set([channels] if isinstance(channels, str) else channels)
        )
        emptied = set()
        for name in names:
            subscriber.channels.discard(name)
            members = self._channels.get(name)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self._channels[name]
                    emptied.add(name)
        if not subscriber.channels:
            subscriber.put_nowait(None)  # ends iter_events()
        if emptied:
            await self._backend.unsubscribe(emptied)


class ChatRedisBackend(RedisChannelsPubSubBackend):
    """Litestar's Redis Pub/Sub backend, with per-message work that does not grow with the
    number of subscribed channels.

    The stock backend checks every incoming message against a fresh set difference of all
    subscribed channels, and every unsubscribe does the same: with thousands of streams on a
    node (a channel each, plus a marker channel per stream opening) each message grew
    costly, and in a reconnect storm subscription markers timed out (those sockets closed
    with 1011). Same checks, by membership.
    """

    async def publish_many(self, batch: list[tuple[bytes, list[str]]]) -> None:
        """Publish events in order, in one round trip (a pipeline of PUBLISH commands)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for data, channels in batch:
                for channel in dict.fromkeys(channels):
                    pipe.publish(channel, data)
            await pipe.execute()

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        pub_sub = self._pub_sub
        await pub_sub.unsubscribe(*channels)
        pending = pub_sub.pending_unsubscribe_channels
        if all(channel in pending for channel in pub_sub.channels):
            self._has_subscribed.clear()

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        pub_sub = self._pub_sub
        while True:
            await self._has_subscribed.wait()
            message = await pub_sub.get_message(
                ignore_subscribe_messages=True, timeout=self._stream_sleep_no_subscriptions
            )
            if message is None:
                continue
            channel = message["channel"]
            # Redis unsubscribes asynchronously: drop what comes for a channel we have left.
            if channel in pub_sub.channels and channel not in pub_sub.pending_unsubscribe_channels:
                yield channel.decode(), message["data"]


class StreamEvent(NamedTuple):
    """One event for a client: the JSON payload, and the message id when it is a message."""

    payload: bytes
    message_id: int | None


def split_order_hint(payload: bytes) -> tuple[int | None, bytes]:
    """(the previous message id the event carries, or None; the event as clients see it)."""
    if payload[:1].isdigit():
        hint, _, event = payload.partition(b" ")
        return int(hint), event
    return None, payload


def message_id_of(payload: bytes) -> int | None:
    """The id of a message event, read from its fixed prefix without decoding the JSON."""
    if not payload.startswith(MESSAGE_PREFIX):
        return None
    end = payload.index(b",", len(MESSAGE_PREFIX))
    return int(payload[len(MESSAGE_PREFIX) : end])


class Subscription:
    """Subscribe to a user's channel; entering returns once the subscription is surely
    active. ``pending`` holds live events that overtook the marker.

    A class rather than an ``@asynccontextmanager``: an open stream keeps it for its whole
    life, and a suspended generator frame per idle socket is memory for nothing.
    """

    __slots__ = ("_channels", "_user_id", "pending", "subscriber")

    def __init__(self, channels: ChannelsPlugin, user_id: int) -> None:
        self._channels = channels
        self._user_id = user_id
        self.pending: list[bytes] = []
        self.subscriber: BoundedSubscriber

    async def __aenter__(self) -> Subscription:
        marker_channel = f"sync:{secrets.token_hex(8)}"
        subscriber = await self._channels.subscribe([user_channel(self._user_id), marker_channel])
        assert isinstance(subscriber, BoundedSubscriber)
        self.subscriber = subscriber
        try:
            self.pending = await _await_marker(self._channels, subscriber, marker_channel)
            await self._channels.unsubscribe(subscriber, [marker_channel])
        except BaseException:
            await self._channels.unsubscribe(subscriber)
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._channels.unsubscribe(self.subscriber)

    def take_payload(self) -> tuple[int | None, bytes] | None:
        """The next queued event, split from its order hint (see ``split_order_hint``), or
        None when nothing is queued."""
        payload = self.pending.pop(0) if self.pending else self.subscriber.pop_event()
        return None if payload is None else split_order_hint(payload)

    async def next_payload(self) -> tuple[int | None, bytes]:
        """The next event, waiting for one."""
        while (item := self.take_payload()) is None:
            await self.subscriber.wait()
        return item

    async def next_message_event(self) -> None:
        """Wait until a message event (to or from the user) arrives."""
        while message_id_of((await self.next_payload())[1]) is None:
            pass


def subscription(channels: ChannelsPlugin, user_id: int) -> Subscription:
    """``async with subscription(channels, user_id) as sub: …``"""
    return Subscription(channels, user_id)


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
    """Replay, then live events, for one user; ``next()`` is safe to cancel (timeouts).

    Without ``after_id`` there is no history to replay: the feed starts with the messages
    sent from ``since`` on (when the client began to connect), not years of history.
    """

    __slots__ = (
        "_cursor",
        "_replay",
        "_replaying",
        "_services",
        "_since",
        "_subscription",
        "_user_id",
    )

    def __init__(
        self,
        services: Services,
        subscription: Subscription,
        user_id: int,
        after_id: int | None,
        since: int = 0,
    ) -> None:
        self._services = services
        self._subscription = subscription
        self._user_id = user_id
        self._cursor = after_id if after_id is not None else -1  # -1: found from ``since``
        self._since = since
        self._replay: Iterator[StreamEvent] = iter(())
        self._replaying = True

    def on_event(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a live event is queued: for a sender that polls."""
        self._subscription.subscriber.on_item = callback

    async def next(self) -> StreamEvent:
        """The next event, waiting for one; safe to cancel (a pending queue read loses nothing)."""
        while (event := await self.poll()) is None:
            await self._subscription.subscriber.wait()
        return event

    async def poll(self) -> StreamEvent | None:
        """The next event if one is due now (replay, or a queued live event), else None.

        It awaits database reads only, never the broker, so a sender can run only while
        there is something to send (see api/stream.py). Safe to cancel."""
        if self._cursor < 0:
            async with self._services.db.read() as conn:
                self._cursor = await store.last_involving_id_before(
                    conn, self._user_id, self._since
                )
        while True:
            if (event := next(self._replay, None)) is not None:
                return event
            if self._replaying:
                await self._load_replay_page()
                continue
            if (queued := self._subscription.take_payload()) is None:
                return None
            if (event := self._live_event(*queued)) is not None:
                return event

    async def _load_replay_page(self) -> None:
        async with self._services.db.read() as conn:
            rows = await store.list_involving(conn, self._user_id, self._cursor, REPLAY_PAGE)
        self._replay = iter(
            [StreamEvent(_encode(MessageEvent(message_out(row))), row.id) for row in rows]
        )
        if rows:
            self._cursor = rows[-1].id
        self._replaying = len(rows) == REPLAY_PAGE

    def _live_event(self, previous: int | None, payload: bytes) -> StreamEvent | None:
        """The live event to send, or None: already sent, or read on from the database."""
        message_id = message_id_of(payload)
        if message_id is None:
            return StreamEvent(payload, None)
        if message_id <= self._cursor:
            return None  # already sent
        if previous == self._cursor:
            self._cursor = message_id  # the very next one: nothing can be in between
            return StreamEvent(payload, message_id)
        self._replaying = True  # it, and any it overtook, come from the database
        return None
