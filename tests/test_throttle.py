"""throttle.py: the rules (consecutive failures, back-off, the hourly cap, success), and the
records shared by nodes through a real Redis, with a fallback while Redis is down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chatserver.throttle import WINDOW_MS, Limits, LoginThrottle, Record, take_turn
from testinfra.procs import free_port

LIMITS = Limits(threshold=3, per_hour=5, backoff_max_ms=4000)


def test_failures_up_to_the_threshold_go_ahead_then_wait_doubles() -> None:
    record, now = Record(window=0), 1_000_000
    assert [take_turn(record, now, LIMITS) for _ in range(3)] == [0, 0, 0]
    assert take_turn(record, now, LIMITS) == 1000  # third failure: 1 s
    assert take_turn(record, now + 1000, LIMITS) == 0  # checked once more …
    assert take_turn(record, now + 1000, LIMITS) == 2000  # … then 2 s
    assert take_turn(record, now + 3000, LIMITS) == 0
    assert take_turn(record, now + 3000, LIMITS) == 4000  # capped at backoff_max


def test_at_most_per_hour_failures_are_checked_in_an_hour() -> None:
    limits = Limits(threshold=100, per_hour=5, backoff_max_ms=1000)
    record, now = Record(window=0), 0
    assert [take_turn(record, now + i, limits) for i in range(5)] == [0] * 5
    assert take_turn(record, now + 10, limits) == WINDOW_MS - 10
    assert take_turn(record, now + WINDOW_MS, limits) == 0  # a new hour


async def test_a_success_clears_the_failures_and_is_not_counted() -> None:
    throttle = LoginThrottle(LIMITS)
    for _ in range(2):
        assert await throttle.acquire("user:1") is None
    assert await throttle.acquire("user:1") is None
    await throttle.succeeded("user:1")
    for _ in range(3):
        assert await throttle.acquire("user:1") is None
    assert await throttle.acquire("user:1") == 1
    assert await throttle.acquire("user:2") is None  # another account is unaffected


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_nodes_share_the_records_through_redis(redis_client: Redis) -> None:
    node_a, node_b = LoginThrottle(LIMITS, redis_client), LoginThrottle(LIMITS, redis_client)
    for node in (node_a, node_b, node_a):
        assert await node.acquire("name:eve") is None
        await node.failed("name:eve")
    assert await node_b.acquire("name:eve") == 1
    assert await node_a.acquire("name:eve") == 1
    assert await node_a.acquire("name:other") is None


async def test_a_success_on_one_node_clears_the_record_for_all(redis_client: Redis) -> None:
    node_a, node_b = LoginThrottle(LIMITS, redis_client), LoginThrottle(LIMITS, redis_client)
    for _ in range(2):
        assert await node_a.acquire("user:7") is None
    assert await node_b.acquire("user:7") is None
    await node_b.succeeded("user:7")
    for _ in range(3):
        assert await node_a.acquire("user:7") is None
    assert await node_b.acquire("user:7") == 1


async def test_with_redis_down_each_node_throttles_on_its_own() -> None:
    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        throttle = LoginThrottle(LIMITS, down)
        for _ in range(3):
            assert await throttle.acquire("user:9") is None
            await throttle.failed("user:9")
        assert await throttle.acquire("user:9") == 1
    finally:
        await down.aclose()
