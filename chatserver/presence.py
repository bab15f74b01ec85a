"""Who has an open stream, on any node: in this process, or in Redis for many nodes.

With Redis, each open stream is a member of a per-user sorted set whose score is when the
entry expires; nodes refresh their entries periodically, so a node that dies without
cleaning up stops counting as soon as its entries expire.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from redis.asyncio import Redis

ENTRY_TTL_SECONDS = 60


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
    """Presence shared by every node through Redis sorted sets."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def connected(self, user_id: int, stream_id: str) -> None:
        await self.refresh([(user_id, stream_id)])

    async def disconnected(self, user_id: int, stream_id: str) -> None:
        await self._redis.zrem(presence_key(user_id), stream_id)

    async def refresh(self, streams: Iterable[tuple[int, str]]) -> None:
        expires = time.time() + ENTRY_TTL_SECONDS
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, stream_id in streams:
                pipe.zadd(presence_key(user_id), {stream_id: expires})
                pipe.expire(presence_key(user_id), ENTRY_TTL_SECONDS * 2)
            await pipe.execute()

    async def online(self, user_id: int) -> bool:
        live = await self._redis.zcount(presence_key(user_id), time.time(), "+inf")
        return int(live) > 0
