"""Who has an open stream, on any node: in this process, or in Redis for many nodes.

With Redis, each open stream is a member of a per-user sorted set whose score is when the
entry expires; nodes refresh their entries periodically, so a node that dies without
cleaning up stops counting as soon as its entries expire. While Redis is unreachable,
presence degrades (nobody online) instead of failing requests.

Presence *changes* (what peers are told, see hub.py) follow an "announced" flag per user:
the stream opening that sets it announces online; a check a grace period after the last
stream closed clears it, and announces offline, only while no stream is open. Each step is
one atomic Redis script, so with many nodes exactly one of them announces each change.
Users whose entries all expired (their node died) are found in one sorted set by expiry,
so no per-user scan is needed to announce them offline.

The same entries cap a user's open streams on every node at once: a stream is counted only
while the user has fewer live entries than the cap (in the same script), so with Redis the
cap holds across workers and nodes; while Redis is unreachable each worker still holds its
own streams to it (hub.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

from redis.asyncio import Redis

from chatserver.broker import BROKER_ERRORS

log = logging.getLogger("chatserver")

ENTRY_TTL_SECONDS = 60
# A presence call that takes longer counts as failed (Redis unreachable).
CALL_TIMEOUT_SECONDS = 2.0
# After a failure, presence leaves Redis alone this long.
RETRY_AFTER_SECONDS = 1.0


class Presence(Protocol):
    async def connected(self, user_id: int, stream_id: str, cap: int | None = None) -> bool | None:
        """Count a stream; True when it makes the user online (announce it); None, counting
        nothing, when the user already has ``cap`` streams open."""

    async def disconnected(self, user_id: int, stream_id: str) -> bool:
        """Forget a stream; True when the user has none left anywhere (check again after
        the grace period with ``went_offline``)."""

    async def went_offline(self, user_id: int) -> bool:
        """True, once, when the user is announced online and has no stream (announce it)."""

    async def expired(self) -> list[int]:
        """Users announced online whose every entry expired (their node is gone)."""

    async def refresh(self, streams: Iterable[tuple[int, str]]) -> None: ...
    async def online(self, user_id: int) -> bool: ...


class LocalPresence:
    """Single-process presence (the default without Redis): a counter of open streams."""

    def __init__(self) -> None:
        self._open: Counter[int] = Counter()
        self._announced: set[int] = set()

    async def connected(self, user_id: int, stream_id: str, cap: int | None = None) -> bool | None:
        if cap is not None and self._open[user_id] >= cap:
            return None
        self._open[user_id] += 1
        if user_id in self._announced:
            return False
        self._announced.add(user_id)
        return True

    async def disconnected(self, user_id: int, stream_id: str) -> bool:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]
            return True
        return False

    async def went_offline(self, user_id: int) -> bool:
        if self._open[user_id] > 0 or user_id not in self._announced:
            return False
        self._announced.discard(user_id)
        return True

    async def expired(self) -> list[int]:
        return []  # nothing expires in one process

    async def refresh(self, streams: Iterable[tuple[int, str]]) -> None:
        """Nothing expires in one process."""

    async def online(self, user_id: int) -> bool:
        return self._open[user_id] > 0


def presence_key(user_id: int) -> str:
    return f"chatserver:presence:{user_id}"


def announced_key(user_id: int) -> str:
    return f"chatserver:announced:{user_id}"


# Every user with entries, scored by when their latest entry expires.
EXPIRY_KEY = "chatserver:presence-expiry"
# How many expired users one housekeeping round announces offline.
EXPIRED_BATCH = 500

# KEYS: entries, announced, expiry; ARGV: stream id, expires, key ttl, user id, now, cap
# (0: none). -1 (nothing counted) when the user already has cap live entries.
CONNECT = """
local cap = tonumber(ARGV[6])
if cap > 0 and redis.call('ZCOUNT', KEYS[1], ARGV[5], '+inf') >= cap then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return redis.call('SETNX', KEYS[2], '1')
"""
# KEYS: entries; ARGV: stream id, now. How many live entries are left.
DISCONNECT = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf')
"""
# KEYS: entries, announced, expiry; ARGV: now, user id. 1 when this call withdraws the
# announcement (no live entry left), else 0.
OFFLINE = """
if redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf') > 0 then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
return redis.call('DEL', KEYS[2])
"""


class RedisPresence:
    """Presence shared by every node through Redis sorted sets.

    Best effort: while Redis is unreachable nobody counts as online and updates are skipped
    (one failure pauses Redis calls for ``RETRY_AFTER_SECONDS``), so opening streams and
    listing users keep working. Entries come back with the hub's next periodic refresh.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._paused_until = 0.0  # monotonic; no Redis calls before then
        self._failing = False
        self._connect = redis.register_script(CONNECT)
        self._disconnect = redis.register_script(DISCONNECT)
        self._offline = redis.register_script(OFFLINE)

    async def connected(self, user_id: int, stream_id: str, cap: int | None = None) -> bool | None:
        keys = [presence_key(user_id), announced_key(user_id), EXPIRY_KEY]
        now = time.time()
        args: list[str | float] = [
            stream_id,
            now + ENTRY_TTL_SECONDS,
            ENTRY_TTL_SECONDS * 2,
            user_id,
            now,
            cap or 0,
        ]
        # Unreachable Redis: counted as not first, and only this worker's cap applies.
        first = await self._call(self._connect(keys, args), 0)
        return None if first == -1 else bool(first)

    async def disconnected(self, user_id: int, stream_id: str) -> bool:
        left = await self._call(self._disconnect([presence_key(user_id)], [stream_id, time.time()]))
        return bool(left == 0)

    async def went_offline(self, user_id: int) -> bool:
        keys = [presence_key(user_id), announced_key(user_id), EXPIRY_KEY]
        return bool(await self._call(self._offline(keys, [time.time(), user_id]), 0))

    async def expired(self) -> list[int]:
        found = await self._call(
            self._redis.zrangebyscore(EXPIRY_KEY, "-inf", time.time(), 0, EXPIRED_BATCH), []
        )
        return [int(user_id) for user_id in found]

    async def _call(self, command: Awaitable[Any], failed: Any = None) -> Any:
        """Run one Redis command; ``failed`` while Redis is unreachable (or paused)."""
        if not self._available():
            with contextlib.suppress(Exception):
                command.close()  # type: ignore[attr-defined]  # never awaited: no warning
            return failed
        try:
            async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                result = await command
        except BROKER_ERRORS as exc:
            self._failed(exc)
            return failed
        self._succeeded()
        return result

    async def refresh(self, streams: Iterable[tuple[int, str]]) -> None:
        if not self._available():
            return
        expires = time.time() + ENTRY_TTL_SECONDS
        try:
            async with (
                asyncio.timeout(CALL_TIMEOUT_SECONDS),
                self._redis.pipeline(transaction=False) as pipe,
            ):
                for user_id, stream_id in streams:
                    pipe.zadd(presence_key(user_id), {stream_id: expires})
                    pipe.expire(presence_key(user_id), ENTRY_TTL_SECONDS * 2)
                    pipe.zadd(EXPIRY_KEY, {str(user_id): expires})
                    # Back after a Redis restart: these users were announced online.
                    pipe.set(announced_key(user_id), "1")
                await pipe.execute()
        except BROKER_ERRORS as exc:
            self._failed(exc)
        else:
            self._succeeded()

    async def online(self, user_id: int) -> bool:
        if not self._available():
            return False
        try:
            async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                live = await self._redis.zcount(presence_key(user_id), time.time(), "+inf")
        except BROKER_ERRORS as exc:
            self._failed(exc)
            return False
        self._succeeded()
        return int(live) > 0

    def _available(self) -> bool:
        return time.monotonic() >= self._paused_until

    def _failed(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + RETRY_AFTER_SECONDS
        if not self._failing:
            self._failing = True
            log.warning("presence unavailable (%s): everyone counts as offline", exc)

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = False
            log.info("presence available again")
