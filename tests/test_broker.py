"""The broker side surviving a Redis restart (broker.py, presence.py, /healthz), against a
real ``redis-server`` stopped and started again on the same port.

While Redis is down, publishing, subscribing and unsubscribing neither raise nor hang, and
``broker_up`` is False. When it is back, the listener re-subscribes every channel (also the
ones subscribed meanwhile), then queues ``RESYNC`` once into every subscriber but the hub's
control subscriber, and live events flow again. Absence is proven by order: a subscriber's
items arrive in publish order, so when a later event has arrived, an extra ``RESYNC`` that
would have come has come.

The end-to-end contract (streams on two nodes catching up through the database) is tested
with the stream itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack

import pytest
from litestar.testing import AsyncTestClient

from chatserver.app import _redis_client, create_app
from chatserver.broker import RESYNC, BoundedSubscriber, ChatChannels, ChatRedisBackend
from chatserver.config import Settings
from chatserver.events import CONTROL_CHANNEL, user_channel
from chatserver.migrations import upgrade
from chatserver.presence import RedisPresence
from testinfra.redis import RedisServer
from tests.helpers import Api
from tests.realtime_helpers import wait_until

TIMEOUT = 5.0  # the contract: streams catch up within 5 s of Redis coming back
BACKLOG = 100
ALICE, BOB = 1, 2


@pytest.fixture
def redis(redis_server: RedisServer, redis_url: str) -> Iterator[RedisServer]:
    """The session's Redis, running again after the test whatever happened."""
    try:
        yield redis_server
    finally:
        if redis_server.managed is None:
            redis_server.start()


def make_channels(url: str) -> ChatChannels:
    """The plugin and its Redis client as the app builds them (app.py)."""
    return ChatChannels(
        backend=ChatRedisBackend(redis=_redis_client(url)),
        arbitrary_channels_allowed=True,
        subscriber_class=BoundedSubscriber,
        subscriber_max_backlog=BACKLOG,
    )


@pytest.fixture
async def nodes(redis: RedisServer) -> AsyncIterator[tuple[ChatChannels, ChatChannels]]:
    """Two nodes: one publishes, the other subscribes."""
    async with AsyncExitStack() as stack:
        pair = make_channels(redis.url()), make_channels(redis.url())
        for node in pair:
            assert isinstance(node._backend, ChatRedisBackend)
            stack.push_async_callback(node._backend._redis.aclose)
            await stack.enter_async_context(node)
        yield pair


async def wait_for(check: Callable[[], bool], what: str, within: float = TIMEOUT) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def next_item(subscriber: BoundedSubscriber) -> bytes | None:
    return await asyncio.wait_for(subscriber.get(), TIMEOUT)


async def subscribed(node: ChatChannels, channel: str) -> BoundedSubscriber:
    """Subscribe, and wait until Redis counts the subscription (PUBSUB NUMSUB)."""
    subscriber = await node.subscribe([channel])
    assert isinstance(subscriber, BoundedSubscriber)
    backend = node._backend
    assert isinstance(backend, ChatRedisBackend)
    deadline = time.monotonic() + TIMEOUT
    while (await backend._redis.pubsub_numsub(channel))[0][1] < 1:
        assert time.monotonic() < deadline, f"{channel} never subscribed"
        await asyncio.sleep(0.02)
    return subscriber


async def test_a_subscriber_outlives_a_redis_restart_and_resyncs_once(
    redis: RedisServer, nodes: tuple[ChatChannels, ChatChannels]
) -> None:
    publisher, node = nodes
    alice = await subscribed(node, user_channel(ALICE))
    control = await subscribed(node, CONTROL_CHANNEL)
    publisher.publish(b"before", user_channel(ALICE))
    assert await next_item(alice) == b"before"
    assert node.broker_up

    redis.stop()
    await wait_for(lambda: not node.broker_up, "the node to notice Redis is down")
    # Publishing while down: lost, but neither raises nor stalls the publish worker.
    publisher.publish(b"lost", user_channel(ALICE))
    assert publisher._pub_queue is not None
    await asyncio.wait_for(publisher._pub_queue.join(), TIMEOUT)
    # Subscribing and unsubscribing while down return at once.
    bob = await asyncio.wait_for(node.subscribe([user_channel(BOB)]), 1)
    assert isinstance(bob, BoundedSubscriber)
    gone = await asyncio.wait_for(node.subscribe(["gone"]), 1)
    await asyncio.wait_for(node.unsubscribe(gone), 1)
    assert not node.broker_up

    redis.start()
    # Without anyone doing anything: RESYNC, once, to every subscriber but the hub's.
    assert await next_item(alice) == RESYNC
    assert await next_item(bob) == RESYNC
    assert node.broker_up
    publisher.publish(b"after", user_channel(ALICE))
    publisher.publish(b"for-bob", user_channel(BOB))
    publisher.publish(b'{"user_id": 1}', CONTROL_CHANNEL)
    assert await next_item(alice) == b"after"
    assert await next_item(bob) == b"for-bob"  # subscribed while down: subscribed since
    assert await next_item(control) == b'{"user_id": 1}'  # and no RESYNC before it
    assert alice.qsize == bob.qsize == control.qsize == 0
    backend = node._backend
    assert isinstance(backend, ChatRedisBackend)
    assert b"gone" not in backend._pub_sub.channels  # unsubscribed while down: forgotten


async def test_a_node_started_while_redis_is_down_subscribes_once_it_is_up(
    redis: RedisServer,
) -> None:
    redis.stop()
    async with AsyncExitStack() as stack:
        publisher, node = make_channels(redis.url()), make_channels(redis.url())
        for each in (publisher, node):
            assert isinstance(each._backend, ChatRedisBackend)
            stack.push_async_callback(each._backend._redis.aclose)
            await asyncio.wait_for(stack.enter_async_context(each), 1)
        alice = await asyncio.wait_for(node.subscribe([user_channel(ALICE)]), 1)
        assert isinstance(alice, BoundedSubscriber)
        assert not node.broker_up

        redis.start()
        assert await next_item(alice) == RESYNC
        publisher.publish(b"live", user_channel(ALICE))
        assert await next_item(alice) == b"live"


async def test_it_survives_more_than_one_restart(
    redis: RedisServer, nodes: tuple[ChatChannels, ChatChannels]
) -> None:
    publisher, node = nodes
    alice = await subscribed(node, user_channel(ALICE))
    for round_ in range(2):
        redis.restart()
        assert await next_item(alice) == RESYNC
        payload = f"round {round_}".encode()
        publisher.publish(payload, user_channel(ALICE))
        assert await next_item(alice) == payload


async def test_presence_degrades_to_offline_while_redis_is_down_and_recovers(
    redis: RedisServer,
) -> None:
    client = _redis_client(redis.url())
    try:
        presence = RedisPresence(client)
        await presence.connected(ALICE, "s1")
        assert await presence.online(ALICE)

        redis.stop()
        started = time.monotonic()
        await presence.connected(BOB, "s2")  # neither raises nor hangs
        await presence.refresh([(ALICE, "s1"), (BOB, "s2")])
        assert not await presence.online(ALICE)
        await presence.disconnected(ALICE, "s1")
        assert time.monotonic() - started < 1

        redis.start()  # empty: entries come back with the next refresh

        async def refreshed() -> bool:
            await presence.refresh([(ALICE, "s1")])
            return await presence.online(ALICE)

        deadline = time.monotonic() + TIMEOUT
        while not await refreshed():
            assert time.monotonic() < deadline, "presence never recovered"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_healthz_reports_redis_and_stays_200_while_it_is_down(
    redis: RedisServer, sqlite_url: str
) -> None:
    settings = Settings(database_url=sqlite_url, redis_url=redis.url())
    await asyncio.to_thread(upgrade, settings.database_url)
    async with AsyncTestClient(app=create_app(settings)) as client:
        api = Api(client)
        alice, bob = await api.signup(), await api.signup()
        r = await client.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "database": "up", "redis": "up"})

        redis.stop()

        async def reported(state: str) -> bool:
            r = await client.get("/healthz")
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["status"], body["database"]) == ("ok", "up")
            return bool(body["redis"] == state)

        await wait_until(lambda: reported("down"), what="redis: down")
        # Sends, reads and presence keep working.
        await api.send(alice, bob.id, "while down")
        assert [m["message"] for m in (await api.inbox(bob))["messages"]][-1:] == ["while down"]
        r = await api.get("/api/v1/users/", alice, user_id=bob.id)
        assert r.status_code == 200, r.text

        redis.start()
        await wait_until(lambda: reported("up"), what="redis: up")


async def test_healthz_has_no_redis_field_without_redis(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url)
    await asyncio.to_thread(upgrade, settings.database_url)
    async with AsyncTestClient(app=create_app(settings)) as client:
        r = await client.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "database": "up"})


async def test_a_channel_subscribed_while_the_reconnect_is_confirmed_is_subscribed_too(
    redis: RedisServer, nodes: tuple[ChatChannels, ChatChannels], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the re-subscription went out, before its PONG: the channel is subscribed
    before ``RESYNC`` is queued (else that stream would stay silent)."""
    publisher, node = nodes
    backend = node._backend
    assert isinstance(backend, ChatRedisBackend)
    alice = await subscribed(node, user_channel(ALICE))
    late: list[BoundedSubscriber] = []
    ping = backend._ping

    async def subscribe_then_ping() -> None:
        if not late:
            subscriber = await node.subscribe([user_channel(BOB)])
            assert isinstance(subscriber, BoundedSubscriber)
            late.append(subscriber)
        await ping()

    monkeypatch.setattr(backend, "_ping", subscribe_then_ping)
    redis.restart()
    assert await next_item(alice) == RESYNC
    (bob,) = late
    assert await next_item(bob) == RESYNC
    publisher.publish(b"for-bob", user_channel(BOB))
    assert await next_item(bob) == b"for-bob"
