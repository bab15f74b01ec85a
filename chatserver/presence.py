"""Who has an open stream, on any node: in this process, or in Redis for many nodes.

With Redis, each open stream is a member of a per-user sorted set whose score is when the
entry expires; nodes refresh their entries periodically, so a node that dies without
cleaning up stops counting as soon as its entries expire. While Redis is unreachable,
presence degrades (nobody online) instead of failing requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from redis.asyncio import Redis

from chatserver.broker import BROKER_ERRORS

log = logging.getLogger("chatserver")

ENTRY_TTL_SECONDS = 60
# A presence call that takes longer counts as failed (Redis unreachable).
CALL_TIMEOUT_SECONDS = 2.0
# After a failure, presence leaves Redis alone this long.
RETRY_AFTER_SECONDS = 1.0


class Presence(Protocol):
    async def connected(self, user_id: int, stream_id: str) -> None: ...
    async def disconnected(self, user_id: int, stream_id: str) -> None: ...
    async def refresh(self, streams: Iterable[tuple[int, str]]) -> None: ...
    async def online(self, user_id: int) -> bool: ...


class LocalPresence:
    """Single-process presence (the default without Redis): a counter of open streams."""

    def __init__(self) -> None:
        self._open: Counter[int] = Counter()

    async def connected(self, user_id: int, stream_id: str) -> None:
        self._open[user_id] += 1

    async def disconnected(self, user_id: int, stream_id: str) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    async def refresh(self, streams: Iterable[tuple[int, str]]) -> None:
        """Nothing expires in one process."""

    async def online(self, user_id: int) -> bool:
        return self._open[user_id] > 0


def presence_key(user_id: int) -> str:
    return f"chatserver:presence:{user_id}"


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

    async def connected(self, user_id: int, stream_id: str) -> None:
        await self.refresh([(user_id, stream_id)])

    async def disconnected(self, user_id: int, stream_id: str) -> None:
        if self._available():
            try:
                async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                    await self._redis.zrem(presence_key(user_id), stream_id)
            except BROKER_ERRORS as exc:
                self._failed(exc)
            else:
                self._succeeded()

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
