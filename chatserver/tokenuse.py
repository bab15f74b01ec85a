"""``tokens.last_used_at``: noted on every Bearer request, written at most once per
resolution per token, by one background task (as ``lastseen.py`` does for users).

Expiry reads the column in the token look-up it already makes (``find_token_user``), so a
request costs no write and no extra read; the price is that ``last_used_at`` lags up to
one resolution plus one flush period behind, which is nothing next to a TTL in days.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from chatserver import store
from chatserver.db import Database, now_us

log = logging.getLogger("chatserver")

FLUSH_CHUNK = 200
# Tokens not noted for this many resolutions are forgotten, so the table stays small.
FORGET_AFTER_RESOLUTIONS = 2


class TokenUse:
    def __init__(self, db: Database, resolution_seconds: float) -> None:
        self._db = db
        self._resolution = resolution_seconds
        self._noted: dict[str, float] = {}  # token hash -> monotonic time of the last note
        self._pending: dict[str, int] = {}  # token hash -> last_used_at to write (µs)
        self._task: asyncio.Task[None] | None = None

    def note(self, token_hash: str) -> None:
        """A request used this token: queue a write unless one was queued within a period."""
        now = time.monotonic()
        previous = self._noted.get(token_hash)
        if previous is not None and now - previous < self._resolution:
            return
        self._noted[token_hash] = now
        self._pending[token_hash] = now_us()

    async def flush(self) -> None:
        """Write every queued time, a few hundred tokens per transaction."""
        # Sorted: two nodes flushing the same tokens lock their rows in one order.
        pending, self._pending = sorted(self._pending.items()), {}
        for start in range(0, len(pending), FLUSH_CHUNK):
            async with self._db.transaction() as conn:
                await store.set_tokens_used(conn, pending[start : start + FLUSH_CHUNK])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the background writer and write what is still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        # Flush often enough that a write is at most a minute late, never more often than
        # a token can be noted.
        period = min(self._resolution, 60.0)
        while True:
            await asyncio.sleep(period)
            try:
                await self.flush()
            except Exception:  # the database may be back next round; these times are lost
                log.exception("writing tokens' last_used_at failed")
            self._forget_idle(time.monotonic() - FORGET_AFTER_RESOLUTIONS * self._resolution)

    def _forget_idle(self, cutoff: float) -> None:
        for token_hash in [t for t, noted in self._noted.items() if noted < cutoff]:
            del self._noted[token_hash]
