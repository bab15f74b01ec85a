"""The token buckets of ``chatserver/ratelimit.py``: in this process, in a real Redis shared
by two limiters, and falling back to this process when Redis is unreachable."""

from __future__ import annotations

import itertools

from redis.asyncio import Redis

from chatserver.config import Settings
from chatserver.ratelimit import LocalBuckets, RateLimiter, Rule
from testinfra.procs import free_port

SLOW = Rule.of("send", rate=0.01, burst=5)  # 5 at once, then one per 100 s
_keys = itertools.count(1)


def test_a_bucket_allows_its_burst_then_refuses_with_a_retry_time() -> None:
    buckets = LocalBuckets()
    decisions = [buckets.hit(SLOW, "alice") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    assert 99 <= refused.retry_after <= 100
    assert refused.reset == 500  # five intervals until the bucket is full again
    assert dict(refused.headers()) == {
        b"ratelimit-limit": b"5",
        b"ratelimit-remaining": b"0",
        b"ratelimit-reset": b"500",
    }


def test_buckets_are_per_key() -> None:
    buckets = LocalBuckets()
    for _ in range(5):
        buckets.hit(SLOW, "alice")
    assert not buckets.hit(SLOW, "alice").allowed
    assert buckets.hit(SLOW, "bob").allowed


def test_limits_off_decide_nothing() -> None:
    limiter = RateLimiter(Settings(rate_limits="off"), None)
    assert limiter.rules == {}


async def test_with_redis_two_limiters_share_one_bucket(redis_url: str) -> None:
    settings = Settings(send_burst=4, send_rate=0.01)
    async with Redis.from_url(redis_url) as one, Redis.from_url(redis_url) as two:
        first, second = RateLimiter(settings, one), RateLimiter(settings, two)
        key = next(_keys)
        allowed = []
        for limiter in (first, second, first, second, first, second):
            decision = await limiter.hit("send", key)
            assert decision is not None
            allowed.append(decision.allowed)
        assert allowed == [True, True, True, True, False, False]


async def test_without_redis_the_limits_fall_back_to_this_process() -> None:
    settings = Settings(send_burst=3, send_rate=0.01)
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    async with dead:
        limiter = RateLimiter(settings, dead)
        allowed = [(await limiter.hit("send", "alice")).allowed for _ in range(4)]  # type: ignore[union-attr]
    assert allowed == [True, True, True, False]
