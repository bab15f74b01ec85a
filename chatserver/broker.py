"""The message broker side of streams: Litestar's channels plugin and its Redis backend,
tuned for many idle subscribers, and surviving Redis restarts.

Litestar's Redis listener task dies with the first connection error, and streams on that
node then go silent. Here the listener survives: while Redis is unreachable it retries with a
short backoff, and when a connection is back it re-subscribes every channel, confirms it
with a PING on the subscription connection (Redis answers in order, so the PONG means every
SUBSCRIBE before it is active), and only then puts ``RESYNC`` into every local subscriber:
whatever was published meanwhile is lost, and the reader re-reads the database from its
cursor. Subscribing, unsubscribing and publishing never raise for a broker outage.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import ChannelT

from chatserver.events import CONTROL_CHANNEL

log = logging.getLogger("chatserver")

# Queued into every local subscriber once the broker is back after an outage: events may
# have been lost meanwhile, read on from the database.
RESYNC = b"resync"
# What a lost or refused connection to Redis raises.
BROKER_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
# Reconnect backoff: short enough that streams resync within a second or two of Redis
# coming back.
RECONNECT_MIN_SECONDS = 0.05
RECONNECT_MAX_SECONDS = 1.0
# A PING sent after reconnecting and not answered in this long is sent again.
CONFIRM_TIMEOUT_SECONDS = 5.0
# How long /healthz waits for Redis to answer a PING.
PING_TIMEOUT_SECONDS = 1.0


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Called when the broker is back after an outage: what was published meanwhile on
        # the control channel (cache evictions) may be lost, so caches built on it start over.
        self.after_resync: list[Callable[[], None]] = []

    async def _on_startup(self) -> None:
        if isinstance(self._backend, ChatRedisBackend):
            self._backend.on_resync = self._resync
        await super()._on_startup()

    @property
    def broker_up(self) -> bool:
        """False while the broker is known to be unreachable (from a lost connection until
        the reconnect is confirmed and ``RESYNC`` queued). Always True in one process."""
        return not isinstance(self._backend, ChatRedisBackend) or self._backend.up

    async def ping_broker(self) -> bool | None:
        """Whether the broker answers (and its listener is connected); None without one."""
        if not isinstance(self._backend, ChatRedisBackend):
            return None
        return self._backend.up and await self._backend.ping()

    def _resync(self) -> None:
        """Queue ``RESYNC`` once into every local subscriber, except the hub's control
        subscriber (revocations are not in the database to re-read)."""
        control = self._channels.get(CONTROL_CHANNEL, set())
        targets = {s for members in self._channels.values() for s in members}
        for subscriber in targets - control:
            subscriber.put_nowait(RESYNC)
        for callback in self.after_resync:
            callback()
        log.info("message broker back: %d subscribers resync", len(targets - control))

    async def _pub_worker(self) -> None:
        """Publish whatever is queued as one batch (overrides Litestar's worker, which
        awaits one broker round trip per event: on a busy node that was one event per
        event-loop turn, and deliveries fell behind).

        While the broker is unreachable each batch fails fast and is lost (subscribers
        re-read the database once it is back); that is logged once per outage. It is still
        tried: another node may already be back on the broker and listening."""
        failing = 0
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
            except BROKER_ERRORS as exc:
                if not failing:
                    log.warning(
                        "publishing to the message broker failed (%s): events are "
                        "lost until it is back, streams then re-read them",
                        exc,
                    )
                failing += len(batch)
            except Exception:  # broker trouble: these events are lost, streams resume by id
                log.exception("publishing %d events failed", len(batch))
            else:
                if failing:
                    log.info("publishing to the message broker again (%d events lost)", failing)
                    failing = 0
            finally:
                for _ in batch:
                    queue.task_done()

    def deliver_here(self, payload: bytes, channel: str) -> None:
        """Queue an event into this process's subscribers of ``channel`` only (the broker
        already brought it here, e.g. inside a presence notice)."""
        for subscriber in self._channels.get(channel, ()):
            subscriber.put_nowait(payload)

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

    def __init__(self, *, redis: Redis, stream_sleep_no_subscriptions: int = 1) -> None:
        super().__init__(redis=redis, stream_sleep_no_subscriptions=stream_sleep_no_subscriptions)
        # False from a lost connection until the reconnect is confirmed.
        self.up = True
        # Called once the reconnect is confirmed (ChatChannels queues RESYNC).
        self.on_resync: Callable[[], None] | None = None
        self._confirm_token: bytes | None = None
        # Channels subscribed and unsubscribed while down, since the last re-subscription.
        self._noted: set[str] = set()
        self._dropped: set[str] = set()
        self._confirm_deadline = 0.0
        self._down_since = 0.0

    async def publish_many(self, batch: list[tuple[bytes, list[str]]]) -> None:
        """Publish events in order, in one round trip (a pipeline of PUBLISH commands)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for data, channels in batch:
                for channel in dict.fromkeys(channels):
                    pipe.publish(channel, data)
            await pipe.execute()

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        pub_sub = self._pub_sub
        names = list(channels)
        if self.up:
            try:
                await pub_sub.unsubscribe(*names)
            except BROKER_ERRORS as exc:
                self._lost(exc)
                self._forget(names)
        else:
            self._forget(names)
        pending = pub_sub.pending_unsubscribe_channels
        if all(channel in pending for channel in pub_sub.channels):
            self._has_subscribed.clear()

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe, or while the broker is down only note the channels: the listener
        subscribes them when it reconnects."""
        names = list(channels)
        if self.up:
            try:
                await self._pub_sub.subscribe(*names)
            except BROKER_ERRORS as exc:
                self._lost(exc)
                self._remember(names)
        else:
            self._remember(names)
        self._has_subscribed.set()

    async def ping(self) -> bool:
        """Whether Redis answers a PING in time (on a pooled connection)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                await self._redis.ping()
        except BROKER_ERRORS:
            return False
        return True

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        """Incoming events; never ends on a broker error (see the module docstring)."""
        pub_sub = self._pub_sub
        delay = RECONNECT_MIN_SECONDS
        while True:
            await self._has_subscribed.wait()
            try:
                if not self.up and (
                    self._confirm_token is None or time.monotonic() > self._confirm_deadline
                ):
                    await self._reconnect()
                message = await pub_sub.get_message(
                    ignore_subscribe_messages=True, timeout=self._stream_sleep_no_subscriptions
                )
            except Exception as exc:  # the listener must outlive any error
                if not isinstance(exc, BROKER_ERRORS):
                    log.exception("the message broker listener failed; reconnecting")
                self._lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            delay = RECONNECT_MIN_SECONDS
            if message is None:
                continue
            if message["type"] == "pong":
                if self._confirm_token is not None and message["data"] == self._confirm_token:
                    try:
                        await self._confirm()
                    except Exception as exc:  # as above: reconnect
                        self._lost(exc)
                continue
            channel = message["channel"]
            # Redis unsubscribes asynchronously: drop what comes for a channel we have left.
            if channel in pub_sub.channels and channel not in pub_sub.pending_unsubscribe_channels:
                yield channel.decode(), message["data"]

    async def _reconnect(self) -> None:
        """Connect, re-subscribe every channel, and ask for a PONG that confirms it."""
        pub_sub = self._pub_sub
        self._noted.clear()
        self._dropped.clear()
        fresh = pub_sub.connection is None
        # A connection that was open before re-subscribes in its on-connect callback; the
        # first one (Redis down since startup) does not.
        await pub_sub.connect()  # type: ignore[no-untyped-call]
        if fresh and pub_sub.channels:
            await pub_sub.execute_command("SUBSCRIBE", *pub_sub.channels)
        await self._ping()

    async def _ping(self) -> None:
        token = secrets.token_hex(8).encode()
        self._confirm_token = token
        self._confirm_deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        await self._pub_sub.ping(token)

    async def _confirm(self) -> None:
        """The PONG came: every channel is subscribed, unless some were (un)subscribed
        while waiting for it. Then apply those and ask again."""
        if self._noted or self._dropped:
            noted, dropped = list(self._noted), list(self._dropped)
            self._noted.clear()
            self._dropped.clear()
            if dropped:
                await self._pub_sub.execute_command("UNSUBSCRIBE", *dropped)
            if noted:
                await self._pub_sub.execute_command("SUBSCRIBE", *noted)
            await self._ping()
            return
        self._confirm_token = None
        self.up = True
        log.warning("message broker back after %.1f s", time.monotonic() - self._down_since)
        if self.on_resync is not None:
            self.on_resync()

    def _lost(self, exc: BaseException) -> None:
        self._confirm_token = None
        if self.up:
            self.up = False
            self._down_since = time.monotonic()
            log.warning(
                "lost the message broker (%s): retrying; streams re-read the database once "
                "it is back",
                exc or type(exc).__name__,
            )

    def _remember(self, names: list[str]) -> None:
        self._noted.update(names)
        self._dropped.difference_update(names)
        channels = self._pub_sub._normalize_keys(_as_keys(names))
        self._pub_sub.channels.update(channels)
        self._pub_sub.pending_unsubscribe_channels.difference_update(channels)

    def _forget(self, names: list[str]) -> None:
        self._dropped.update(names)
        self._noted.difference_update(names)
        for channel in self._pub_sub._normalize_keys(_as_keys(names)):
            self._pub_sub.channels.pop(channel, None)
            self._pub_sub.pending_unsubscribe_channels.discard(channel)


def _as_keys(names: list[str]) -> dict[ChannelT, None]:
    return dict.fromkeys(names)
