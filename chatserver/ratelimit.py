"""Request-rate limits: a token bucket per (rule, user or client address), kept in this
process or, with Redis configured, in Redis so every worker and node shares it.

Each bucket is one number, its "theoretical arrival time" (GCRA, the token bucket written as
a single timestamp): a request is allowed when it comes no earlier than ``tat - burst ×
interval``, and allowing it moves ``tat`` on by one interval. One dict entry (or one Redis
key with an expiry) per active bucket, one comparison per request.

Why not Litestar's rate-limit middleware: it runs before the route authenticates, so it
cannot count per user, and its window ("N per minute") has no burst; the sends need a
burst of 30 then 10 per second. Why not the ``limits`` package: same window model, and a
Redis round trip per request even for one worker.

When Redis fails, the limits fall back to this process's own buckets (fail local, never
open or closed) and Redis is tried again after ``REDIS_RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chatserver.config import Settings

log = logging.getLogger("chatserver")

REDIS_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.5
PRUNE_EVERY = 10_000  # buckets touched between two sweeps of the full (expired) ones
KEY_PREFIX = "chat:rl:"

# KEYS[1]: the bucket; ARGV: interval and burst window, in microseconds. Redis's own clock,
# so nodes with skewed clocks still share one timeline. Returns {allowed, tat - now}.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if now < tat + interval - window then return {0, tat - now} end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
return {1, tat - now}
"""


class Rule(NamedTuple):
    """``burst`` requests at once, then ``rate`` per second."""

    name: str
    rate: float
    burst: int
    interval: float  # seconds per request: 1 / rate
    window: float  # burst × interval: how far ahead of now a bucket may run
    limit_header: tuple[bytes, bytes]

    @classmethod
    def of(cls, name: str, rate: float, burst: int) -> Rule:
        interval = 1.0 / rate
        header = (b"ratelimit-limit", b"%d" % burst)
        return cls(name, rate, burst, interval, burst * interval, header)

    def decide(self, allowed: bool, ahead: float) -> Decision:
        """The decision, given how far (seconds) the bucket's ``tat`` is ahead of now."""
        if not allowed:
            retry = ahead + self.interval - self.window
            return Decision(False, self, 0, math.ceil(ahead), max(1, math.ceil(retry)))
        remaining = int((self.window - ahead) / self.interval + 1e-9)
        return Decision(True, self, remaining if remaining > 0 else 0, math.ceil(ahead), 0)


class Decision(NamedTuple):
    allowed: bool
    rule: Rule
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds, when refused

    @property
    def limit(self) -> int:
        return self.rule.burst

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The IETF draft's ``RateLimit-Limit``/``-Remaining``/``-Reset`` fields."""
        return [
            self.rule.limit_header,
            (b"ratelimit-remaining", b"%d" % self.remaining),
            (b"ratelimit-reset", b"%d" % self.reset),
        ]


def rules(settings: Settings) -> dict[str, Rule]:
    """The configured rules by name; none when ``CHAT_RATE_LIMITS=off``."""
    if settings.rate_limits == "off":
        return {}
    return {
        name: Rule.of(name, getattr(settings, f"{name}_rate"), getattr(settings, f"{name}_burst"))
        for name in ("send", "read", "signup", "token")
    }


class LocalBuckets:
    """This process's buckets: key -> tat (monotonic seconds)."""

    def __init__(self) -> None:
        self._tat: dict[Any, float] = {}
        self._touched = 0

    def hit(self, rule: Rule, key: Any) -> Decision:
        now = time.monotonic()
        tat = self._tat.get(key, now)
        if tat < now:
            tat = now
        if now < tat + rule.interval - rule.window:
            return rule.decide(False, tat - now)
        self._tat[key] = tat = tat + rule.interval
        self._touched += 1
        if self._touched >= PRUNE_EVERY:
            self._prune(now)
        return rule.decide(True, tat - now)

    def _prune(self, now: float) -> None:
        """Forget full buckets (tat in the past): they mean the same as absent ones."""
        self._touched = 0
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}


class RateLimiter:
    """Every rule's buckets: in Redis when configured (shared), else in this process."""

    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self.rules = rules(settings)
        self._local = LocalBuckets()
        self._redis = redis
        self._script = redis.register_script(GCRA_SCRIPT) if redis is not None else None
        self._redis_down_until = 0.0

    @property
    def shared(self) -> bool:
        """Whether the buckets live in Redis (``hit`` must be awaited) or here (``hit_here``)."""
        return self._script is not None

    def hit_here(self, rule_name: str, key: Any) -> Decision | None:
        """``hit`` without Redis: no coroutine on the hot path of a single node."""
        rule = self.rules.get(rule_name)
        return None if rule is None else self._local.hit(rule, (rule_name, key))

    async def hit(self, rule_name: str, key: Any) -> Decision | None:
        """Count one request against ``rule_name`` for ``key``; None when the rule is off."""
        rule = self.rules.get(rule_name)
        if rule is None:
            return None
        if self._script is None or time.monotonic() < self._redis_down_until:
            return self._local.hit(rule, (rule_name, key))
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                allowed, ahead = await self._script(
                    keys=[f"{KEY_PREFIX}{rule_name}:{key}"],
                    args=[int(rule.interval * 1e6), int(rule.window * 1e6)],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("rate limits are per process until Redis answers again: %s", exc)
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            return self._local.hit(rule, (rule_name, key))
        return rule.decide(bool(allowed), int(ahead) / 1e6)
