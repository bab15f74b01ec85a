"""The channels layer's contract (streams.py, events.py, hub.py), one suite run on both
backends: the in-process memory backend, and Redis (a real server) between two nodes.

On Redis, events are published on one node and received on another, each with its own
``ChatChannels`` and connection, as in a scale-out deployment; on the memory backend both
ends are the same plugin. Every subscription is opened with `subscription`, which returns
once the broker confirmed it. Absence is proven by order, never by waiting: events on one
node are delivered in publish order, so when a later event has arrived, an earlier one that
would have come has come.

Not covered here: the HTTP/WebSocket stream (test_stream.py), positions against the
database (test_feed.py), a subscriber surviving a Redis restart (test_broker.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec
import pytest
from litestar.channels.backends.memory import MemoryChannelsBackend
from redis.asyncio import Redis

from chatserver.auth import TokenCache
from chatserver.db import Database, open_database
from chatserver.events import Events, MessageEvent, ReadEvent, ReceivedEvent, user_channel
from chatserver.hub import CLOSE_REVOKED, Hub, StreamHandle
from chatserver.lastseen import LastSeen
from chatserver.migrations import upgrade
from chatserver.presence import LocalPresence
from chatserver.schemas import MessageOut
from chatserver.store import Positions
from chatserver.streams import (
    BoundedSubscriber,
    ChatChannels,
    ChatRedisBackend,
    Subscription,
    subscription,
)
from tests.realtime_helpers import wait_until

BACKLOG = 100  # each subscriber's queue (the app's comes from CHAT_STREAM_QUEUE_SIZE)
TIMEOUT = 5.0
ALICE, BOB, CAROL = 1, 2, 3


class Nodes(NamedTuple):
    """Where events are published, where they are subscribed to, and (Redis) a client to
    look at the broker with."""

    publisher: ChatChannels
    subscriber: ChatChannels
    redis: Redis | None


def make_channels(backend: MemoryChannelsBackend | ChatRedisBackend) -> ChatChannels:
    """The plugin as the app builds it (app.py)."""
    return ChatChannels(
        backend=backend,
        arbitrary_channels_allowed=True,
        subscriber_class=BoundedSubscriber,
        subscriber_max_backlog=BACKLOG,
    )


@pytest.fixture(params=["memory", "redis"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    async with AsyncExitStack() as stack:
        if request.param == "memory":
            node = make_channels(MemoryChannelsBackend())
            await stack.enter_async_context(node)
            yield Nodes(node, node, None)
        else:
            url = str(request.getfixturevalue("redis_url"))
            clients = [Redis.from_url(url) for _ in range(3)]  # one each node, one of our own
            for client in clients:
                stack.push_async_callback(client.aclose)
            publisher, subscriber = (make_channels(ChatRedisBackend(redis=c)) for c in clients[:2])
            await stack.enter_async_context(publisher)
            await stack.enter_async_context(subscriber)
            yield Nodes(publisher, subscriber, clients[2])


async def next_payload(sub: Subscription) -> bytes:
    """The next event, waited for (bounded)."""
    return await asyncio.wait_for(sub.next_payload(), TIMEOUT)


# ------------------------------------------------------------------ delivery


async def test_an_event_reaches_the_subscribers_of_its_channel_only(nodes: Nodes) -> None:
    async with (
        subscription(nodes.subscriber, ALICE) as alice,
        subscription(nodes.subscriber, BOB) as bob,
    ):
        nodes.publisher.publish(b"for-alice", user_channel(ALICE))
        nodes.publisher.publish(b"for-bob", user_channel(BOB))
        assert await next_payload(alice) == b"for-alice"
        assert await next_payload(bob) == b"for-bob"  # and not b"for-alice" first
        nodes.publisher.publish(b"again", user_channel(ALICE))
        assert await next_payload(alice) == b"again"  # and not b"for-bob" first


async def test_every_subscriber_of_a_channel_gets_the_event_once(nodes: Nodes) -> None:
    """Two devices of one user (on two nodes with Redis, the publisher's own included)."""
    async with (
        subscription(nodes.publisher, ALICE) as here,
        subscription(nodes.subscriber, ALICE) as there,
        subscription(nodes.subscriber, BOB) as bob,
    ):
        # One publish to several channels.
        nodes.publisher.publish(b"both", [user_channel(ALICE), user_channel(BOB)])
        nodes.publisher.publish(b"next", [user_channel(ALICE), user_channel(BOB)])
        for sub in (here, there, bob):
            assert [await next_payload(sub), await next_payload(sub)] == [b"both", b"next"]


async def test_events_arrive_in_publish_order(nodes: Nodes) -> None:
    async with (
        subscription(nodes.subscriber, ALICE) as alice,
        subscription(nodes.subscriber, BOB) as bob,
    ):
        for i in range(BACKLOG):  # interleaved on two channels, in one burst
            nodes.publisher.publish(b"a%d" % i, user_channel(ALICE))
            nodes.publisher.publish(b"b%d" % i, user_channel(BOB))
        assert [await next_payload(alice) for _ in range(BACKLOG)] == [
            b"a%d" % i for i in range(BACKLOG)
        ]
        assert [await next_payload(bob) for _ in range(BACKLOG)] == [
            b"b%d" % i for i in range(BACKLOG)
        ]


async def test_an_event_nobody_listens_to_is_dropped_harmlessly(nodes: Nodes) -> None:
    async with subscription(nodes.subscriber, BOB) as bob:
        nodes.publisher.publish(b"unheard", user_channel(ALICE))
        nodes.publisher.publish(b"flush", user_channel(BOB))
        # Once this arrived, the earlier publish went through, with nobody to hear it.
        assert await next_payload(bob) == b"flush"
    async with subscription(nodes.subscriber, ALICE) as alice:  # channels keep no history
        nodes.publisher.publish(b"heard", user_channel(ALICE))
        assert await next_payload(alice) == b"heard"


# ------------------------------------------------------------------ slow subscribers


async def test_a_slow_subscriber_keeps_a_bounded_backlog_and_is_told_it_overflowed(
    nodes: Nodes,
) -> None:
    async with (
        subscription(nodes.subscriber, ALICE) as slow,
        subscription(nodes.subscriber, BOB) as watcher,
    ):
        overflows = 0

        def overflowed() -> None:
            nonlocal overflows
            overflows += 1

        slow.subscriber.on_overflow = overflowed
        sent = [b"event-%d" % i for i in range(BACKLOG + 5)]
        for payload in sent:
            nodes.publisher.publish(payload, user_channel(ALICE))
        nodes.publisher.publish(b"done", user_channel(BOB))
        assert await next_payload(watcher) == b"done"  # every event above was dispatched

        assert slow.subscriber.qsize == BACKLOG
        assert overflows == len(sent) - BACKLOG
        # Putting never waits, even when full (the plugin's own unsubscribe puts a sentinel).
        await asyncio.wait_for(slow.subscriber.put(b"one more"), TIMEOUT)
        assert slow.subscriber.qsize == BACKLOG
        # The oldest events are kept, in order: a stream that overflowed resumes after them.
        assert [await next_payload(slow) for _ in range(BACKLOG)] == sent[:BACKLOG]
        assert slow.take_payload() is None


# ------------------------------------------------------------------ unsubscribing


async def test_unsubscribing_ends_the_subscriber_and_stops_its_delivery(nodes: Nodes) -> None:
    async with subscription(nodes.subscriber, ALICE) as staying:
        async with subscription(nodes.subscriber, ALICE) as leaving:
            pass
        # Its event iterator ends (the unsubscribe queues the end sentinel).
        left = [event async for event in leaving.subscriber.iter_events()]
        assert left == []
        nodes.publisher.publish(b"after", user_channel(ALICE))
        assert await next_payload(staying) == b"after"  # the channel still works for others
        assert leaving.subscriber.qsize == 0


async def test_unsubscribing_from_one_channel_keeps_the_others(nodes: Nodes) -> None:
    sub = await nodes.subscriber.subscribe([user_channel(ALICE), user_channel(BOB)])
    try:
        # Wait until both subscriptions are active (the marker dance of Subscription).
        async with subscription(nodes.subscriber, CAROL):
            pass
        await nodes.subscriber.unsubscribe(sub, [user_channel(BOB)])
        async with subscription(nodes.subscriber, CAROL) as carol:
            nodes.publisher.publish(b"to-bob", user_channel(BOB))
            nodes.publisher.publish(b"to-alice", user_channel(ALICE))
            nodes.publisher.publish(b"flush", user_channel(CAROL))
            assert await next_payload(carol) == b"flush"
        assert sub.pop_event() == b"to-alice"
        assert sub.pop_event() is None
    finally:
        await nodes.subscriber.unsubscribe(sub)


async def test_the_last_subscriber_leaving_releases_the_channel(nodes: Nodes) -> None:
    channel = user_channel(ALICE)
    async with subscription(nodes.subscriber, ALICE):
        assert nodes.subscriber.may_have_listeners(channel)
    if nodes.redis is None:
        # In one process, the plugin knows nobody listens: events need not be rendered.
        assert not nodes.subscriber.may_have_listeners(channel)
        return
    # Other nodes' subscribers are unknown, so it may always have listeners...
    assert nodes.subscriber.may_have_listeners(channel)
    # ...but this node leaves every channel it used at Redis, its marker channels included.
    redis = nodes.redis

    async def no_channels() -> bool:
        return not await redis.pubsub_channels()

    await wait_until(no_channels, what="no channel subscribed at Redis")


# ------------------------------------------------------------------ Events


def message_out(message_id: int, sent_by: int, received_by: int) -> MessageOut:
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    return MessageOut(message_id, sent_by, received_by, "hello", at, None)


def encoded(pos: int, message: MessageOut) -> bytes:
    """A message event as the client receives it (the channel carries exactly this)."""
    return msgspec.json.encode(MessageEvent(pos, msgspec.Raw(msgspec.json.encode(message))))


async def test_a_message_reaches_sender_and_recipient_each_at_their_position(
    nodes: Nodes,
) -> None:
    events = Events(nodes.publisher, nodes.publisher.may_have_listeners)
    async with (
        subscription(nodes.subscriber, ALICE) as alice,
        subscription(nodes.subscriber, BOB) as bob,
        subscription(nodes.subscriber, CAROL) as carol,
    ):
        to_bob = message_out(10, ALICE, BOB)
        events.publish_message(to_bob, Positions(sender=7, recipient=9))
        to_alice = message_out(11, BOB, ALICE)
        events.publish_message(to_alice, Positions(sender=10, recipient=8))
        to_herself = message_out(12, ALICE, ALICE)
        events.publish_message(to_herself, Positions(sender=9, recipient=9))
        assert [await next_payload(alice) for _ in range(3)] == [
            encoded(7, to_bob),
            encoded(8, to_alice),
            encoded(9, to_herself),  # one copy
        ]
        assert [await next_payload(bob), await next_payload(bob)] == [
            encoded(9, to_bob),
            encoded(10, to_alice),
        ]
        nodes.publisher.publish(b"flush", user_channel(CAROL))
        assert await next_payload(carol) == b"flush"  # nothing for a third user
        nodes.publisher.publish(b"flush", user_channel(ALICE))
        assert await next_payload(alice) == b"flush"  # no second copy of her own note
    decoded = msgspec.json.decode(encoded(7, to_bob))
    assert list(decoded) == ["type", "pos", "message"]


async def test_received_events_go_to_each_sender_at_their_position(nodes: Nodes) -> None:
    events = Events(nodes.publisher, nodes.publisher.may_have_listeners)
    at_us = 1_714_564_800_000_000
    async with (
        subscription(nodes.subscriber, ALICE) as alice,
        subscription(nodes.subscriber, CAROL) as carol,
    ):
        events.publish_received(BOB, [(ALICE, 4, [10, 11]), (CAROL, 2, [12])], at_us)
        decode = msgspec.json.Decoder(ReceivedEvent).decode
        to_alice = decode(await next_payload(alice))
        to_carol = decode(await next_payload(carol))
    assert (to_alice.pos, to_alice.message_ids, to_alice.by) == (4, [10, 11], BOB)
    assert (to_carol.pos, to_carol.message_ids, to_carol.by) == (2, [12], BOB)
    assert to_alice.at == to_carol.at == datetime.fromtimestamp(at_us / 1e6, UTC)


async def test_read_events_go_to_both_users_at_their_position(nodes: Nodes) -> None:
    events = Events(nodes.publisher, nodes.publisher.may_have_listeners)
    at_us = 1_714_564_800_000_000
    async with (
        subscription(nodes.subscriber, ALICE) as alice,
        subscription(nodes.subscriber, BOB) as bob,
    ):
        events.publish_read(BOB, ALICE, 10, at_us, {ALICE: 5, BOB: 3})
        decode = msgspec.json.Decoder(ReadEvent).decode
        to_alice = decode(await next_payload(alice))
        to_bob = decode(await next_payload(bob))
    at = datetime.fromtimestamp(at_us / 1e6, UTC)
    assert to_alice == ReadEvent(5, BOB, ALICE, 10, at)
    assert to_bob == ReadEvent(3, BOB, ALICE, 10, at)


async def test_events_for_users_nobody_streams_are_not_published(nodes: Nodes) -> None:
    published: list[str] = []

    def may_listen(channel: str) -> bool:
        published.append(channel)
        return False

    events = Events(nodes.publisher, may_listen)
    async with subscription(nodes.subscriber, ALICE) as alice:
        events.publish_message(message_out(10, ALICE, BOB), Positions(7, 9))
        events.publish_received(BOB, [(ALICE, 8, [10])], 1_714_564_800_000_000)
        events.publish_read(BOB, ALICE, 10, 1_714_564_800_000_000, {ALICE: 9, BOB: 10})
        nodes.publisher.publish(b"flush", user_channel(ALICE))
        assert await next_payload(alice) == b"flush"
    assert sorted(set(published)) == [user_channel(ALICE), user_channel(BOB)]


# ------------------------------------------------------------------ revocations (hub)


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, sqlite_url)
    database = await open_database(sqlite_url)
    try:
        yield database
    finally:
        await database.close()


async def test_a_revocation_closes_the_matching_streams_on_every_node(
    nodes: Nodes, db: Database
) -> None:
    hub = Hub(nodes.subscriber, LocalPresence(), TokenCache(60), LastSeen(db, 60), db, 3.0)
    await hub.start()
    try:
        # Subscribed after the hub's control channel on the same connection: once this
        # subscription is confirmed, so is the hub's.
        async with subscription(nodes.subscriber, ALICE):
            pass
        revoked, kept, other_user = (
            StreamHandle(ALICE, "hash-1"),
            StreamHandle(ALICE, "hash-2"),
            StreamHandle(BOB, "hash-1"),
        )
        for handle in (revoked, kept, other_user):
            await hub.open(handle)
        events = Events(nodes.publisher)
        events.revoke_token(ALICE, "hash-1")
        assert await asyncio.wait_for(asyncio.shield(revoked.closed), TIMEOUT) == CLOSE_REVOKED
        events.revoke_user(ALICE)
        assert await asyncio.wait_for(asyncio.shield(kept.closed), TIMEOUT) == CLOSE_REVOKED
        assert not other_user.closed.done()
        for handle in (revoked, kept, other_user):
            await hub.close(handle)
    finally:
        await hub.stop()
