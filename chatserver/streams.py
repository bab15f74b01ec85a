"""A user's live feed: subscribe, replay from the database, then go live — no gap, no duplicate.

Every event a user can receive is stored with the user's position (1, 2, 3 …: each is
taken under the user's row lock, in the transaction that makes the change, so they become
visible in order); a message's events are its row (``store.list_events``), so a message
deleted with its recipient's account leaves its position out. The order of steps is what
makes resume exact:

1. Subscribe to the user's channel, and wait until the subscription is known to be active
   (a marker published on a private channel, subscribed in the same command, comes back).
2. Replay from the database every event after the cursor position.
3. Deliver live events: one at exactly the next position goes out as it is; one at or
   below the cursor was already sent; one further ahead means others overtook it (publishes
   race one another after their commits) or were lost, so the feed reads on from the
   database, oldest first. A burst costs one read, as the rest are then "already sent".

While the broker is down (Redis), nothing arrives live; when it is back it queues
``RESYNC`` for every subscriber (see broker.py), and the feed reads on from the database.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import NamedTuple

import msgspec
from litestar.channels import ChannelsPlugin

from chatserver import store
from chatserver.broker import RESYNC
from chatserver.broker import BoundedSubscriber as BoundedSubscriber
from chatserver.broker import ChatChannels as ChatChannels
from chatserver.broker import ChatRedisBackend as ChatRedisBackend
from chatserver.broker import StreamUnavailable as StreamUnavailable
from chatserver.events import ResetEvent, is_message_event, pos_of, render, user_channel
from chatserver.metrics import OPEN_STREAMS
from chatserver.services import Services

log = logging.getLogger("chatserver")
REPLAY_PAGE = 500
# How long a new stream waits for the broker to confirm its subscription. Generous: when
# thousands of clients reconnect to one node at once, their markers queue behind each other
# (one Redis round trip each), and a stream given up on only reconnects and adds to the storm.
SUBSCRIBE_TIMEOUT_SECONDS = 30.0


class StreamEvent(NamedTuple):
    """One event for a client: the JSON payload, and its position (None for an event that
    has none: errors, ephemeral events)."""

    payload: bytes
    pos: int | None


class Subscription:
    """Subscribe to a user's channel; entering returns once the subscription is surely
    active (or at once while the broker is down: its return brings a RESYNC). ``pending``
    holds live events that overtook the marker.

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
            if _broker_up(self._channels):
                self.pending = await _await_marker(self._channels, subscriber, marker_channel)
            await self._channels.unsubscribe(subscriber, [marker_channel])
        except BaseException:
            await self._channels.unsubscribe(subscriber)
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._channels.unsubscribe(self.subscriber)

    def take_payload(self) -> bytes | None:
        """The next queued event, or None when nothing is queued."""
        return self.pending.pop(0) if self.pending else self.subscriber.pop_event()

    async def next_payload(self) -> bytes:
        """The next event, waiting for one."""
        while (payload := self.take_payload()) is None:
            await self.subscriber.wait()
        return payload

    async def next_message_event(self) -> None:
        """Wait until a message event (to or from the user) arrives, or the broker is back
        after an outage (the caller reads the database again either way)."""
        while not _is_news(await self.next_payload()):
            pass


def _is_news(payload: bytes) -> bool:
    return payload == RESYNC or is_message_event(payload)


def _broker_up(channels: ChannelsPlugin) -> bool:
    return bool(getattr(channels, "broker_up", True))


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
                if payload == RESYNC:  # the broker is back: the subscription is active
                    break
    except TimeoutError:
        raise StreamUnavailable("the message broker did not confirm the subscription") from None
    return early


async def start_position(services: Services, user_id: int, after_id: int | None) -> int:
    """Where a stream without ``since`` starts: after the message ``after_id`` when given
    (ids and positions go in the same order for a user), else at the latest event (only
    what happens from now on)."""
    async with services.db.read() as conn:
        if after_id is not None:
            return await store.event_pos_after_message(conn, user_id, after_id)
        return await store.current_event_pos(conn, user_id)


class EventBatch(NamedTuple):
    """Events after a position, for clients that poll (``GET /api/v1/events``)."""

    events: list[bytes]
    next: int  # the position to ask after next time
    reset: bool  # the position asked for is gone (or not reached): refetch


async def read_events(
    services: Services, user_id: int, since: int | None, limit: int
) -> EventBatch:
    """The user's events after ``since`` (none, at the current position, without it)."""
    async with services.db.read() as conn:
        current = await store.current_event_pos(conn, user_id)
        if since is None:
            return EventBatch([], current, reset=False)
        rows = await store.list_events(conn, user_id, since, limit)
        gone = await store.events_gone_up_to(conn, user_id)
    if _is_gap(since, gone, current):
        return EventBatch([], current, reset=True)
    events = [payload for row in rows if (payload := render(row)) is not None]
    last = rows[-1].pos if rows else since
    # Not a full page: every event up to ``current`` (committed before the rows were read)
    # is in it, and a position missing up to there is a message deleted with an account.
    return EventBatch(events, last if len(rows) == limit else max(last, current), reset=False)


async def wait_for_events(
    services: Services, user_id: int, since: int | None, limit: int, wait: float
) -> EventBatch:
    """``read_events``, holding up to ``wait`` seconds until there is at least one."""
    batch = await read_events(services, user_id, since, limit)
    if batch.events or batch.reset or wait <= 0:
        return batch
    since = batch.next
    async with subscription(services.events.channels, user_id) as sub:
        try:
            with OPEN_STREAMS.labels("longpoll").track_inprogress():
                async with asyncio.timeout(wait):
                    while True:
                        # Read after subscribing (and after each event): nothing committed
                        # between the first read and the subscription is missed.
                        batch = await read_events(services, user_id, since, limit)
                        if batch.events or batch.reset:
                            return batch
                        await sub.next_payload()
        except TimeoutError:
            pass
    return batch


class Feed:
    """Replay, then live events, for one user, after position ``since``; ``next()`` is safe
    to cancel (timeouts). A position older than what is kept (or one not reached yet)
    starts with one ``reset`` event carrying the current position."""

    __slots__ = (
        "_checked",
        "_cursor",
        "_replay",
        "_replaying",
        "_services",
        "_subscription",
        "_user_id",
    )

    def __init__(
        self, services: Services, subscription: Subscription, user_id: int, since: int
    ) -> None:
        self._services = services
        self._subscription = subscription
        self._user_id = user_id
        self._cursor = since
        self._replay: Iterator[StreamEvent] = iter(())
        self._replaying = True
        self._checked = False  # whether the first replay page has been checked for a gap

    @property
    def cursor(self) -> int:
        """The position of the last event sent (or skipped as gone)."""
        return self._cursor

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
        while True:
            if (event := next(self._replay, None)) is not None:
                return event
            if self._replaying:
                await self._load_replay_page()
                continue
            if (queued := self._subscription.take_payload()) is None:
                return None
            if (event := self._live_event(queued)) is not None:
                return event

    async def _load_replay_page(self) -> None:
        async with self._services.db.read() as conn:
            # The current position first: once it is committed, so is every event up to it,
            # so the events read next cannot come back short of it (PostgreSQL reads are not
            # one snapshot).
            current = None if self._checked else await store.current_event_pos(conn, self._user_id)
            rows = await store.list_events(conn, self._user_id, self._cursor, REPLAY_PAGE)
            # After the rows: a deletion that took any of them is committed by now.
            gone = 0 if self._checked else await store.events_gone_up_to(conn, self._user_id)
        events: list[StreamEvent] = []
        if current is not None and _is_gap(self._cursor, gone, current):
            events.append(StreamEvent(_encode_reset(current), current))
            rows = []
            self._cursor = current
        self._checked = True
        for row in rows:
            payload = render(row)
            if payload is not None:  # a message deleted with its recipient's account
                events.append(StreamEvent(payload, row.pos))
        if rows:
            self._cursor = rows[-1].pos
        self._replay = iter(events)
        self._replaying = len(rows) == REPLAY_PAGE

    def _live_event(self, payload: bytes) -> StreamEvent | None:
        """The live event to send, or None: already sent, or read on from the database."""
        if payload == RESYNC:
            self._replaying = True
            return None
        pos = pos_of(payload)
        if pos is None:
            return StreamEvent(payload, None)
        if pos <= self._cursor:
            return None  # already sent
        if pos == self._cursor + 1:
            self._cursor = pos  # the very next one: nothing can be in between
            return StreamEvent(payload, pos)
        self._replaying = True  # it, and any it overtook, come from the database
        return None


def _is_gap(since: int, gone: int, current: int) -> bool:
    """Whether events after ``since`` are missing: deleted as too old (``gone`` is the
    latest position whose event was), or ``since`` is a position this user has not reached."""
    return since > current or since < gone


def _encode_reset(current: int) -> bytes:
    return msgspec.json.encode(ResetEvent(current))
