"""Typing notices: ephemeral, relayed at most once per pair of users every 2 seconds.

A client says it is typing with ``POST /api/v1/conversations/{user_id}/typing`` or a
``{"type": "typing", "to": …}`` frame on its WebSocket; the other user's streams get
``{"type": "typing", "user_id": …}``. Extra notices inside the window are dropped, not
refused, and cost no database read: the window is taken only once the pair was found valid.
With Redis the window is shared by every node (one ``SET NX PX``), so a client whose
requests land on different nodes is still relayed once per window.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from chatserver import store
from chatserver.broker import BROKER_ERRORS
from chatserver.errors import NotFound
from chatserver.services import Services

log = logging.getLogger("chatserver")

WINDOW_SECONDS = 2.0
CALL_TIMEOUT_SECONDS = 0.5
# Past this many remembered pairs, the ones whose window has passed are forgotten.
PRUNE_AT = 10_000


class TypingWindow:
    """The per-pair window: in this process, and in Redis when there is one."""

    def __init__(self, redis: Redis | None = None) -> None:
        self._redis = redis
        self._last: dict[tuple[int, int], float] = {}  # pair -> monotonic time relayed

    def open(self, user_id: int, to: int) -> bool:
        """Whether this process relayed a notice for the pair within the window."""
        last = self._last.get((user_id, to))
        return last is not None and time.monotonic() - last < WINDOW_SECONDS

    async def take(self, user_id: int, to: int) -> bool:
        """Start the pair's window; False when it was already running (drop the notice)."""
        now = time.monotonic()
        if self.open(user_id, to):
            return False
        if len(self._last) >= PRUNE_AT:
            self._last = {p: t for p, t in self._last.items() if now - t < WINDOW_SECONDS}
        self._last[(user_id, to)] = now
        return await self._take_shared(user_id, to)

    async def _take_shared(self, user_id: int, to: int) -> bool:
        if self._redis is None:
            return True
        key = f"chatserver:typing:{user_id}:{to}"
        try:
            async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
                taken = await self._redis.set(key, 1, nx=True, px=int(WINDOW_SECONDS * 1000))
        except BROKER_ERRORS:
            return True  # Redis is down: this node's window still holds
        return bool(taken)


async def relay_typing(s: Services, user_id: int, to: int) -> None:
    """Relay that ``user_id`` is typing to ``to``; NotFound without a conversation.

    Dropped silently: within the pair's window, to yourself, or when ``to`` blocks you
    (the sender is not told: a block is not revealed)."""
    window = s.typing
    if user_id == to or window.open(user_id, to):
        return
    async with s.db.read() as conn:
        target = await store.typing_target(conn, user_id, to)
        if target is None:
            exists = await store.get_user(conn, to) is not None
    if target is None:
        why = "You have no conversation with that user" if exists else "There is no such user"
        raise NotFound(why)
    if await window.take(user_id, to) and not target.blocked:
        s.events.publish_typing(user_id, to)
