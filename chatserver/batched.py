"""Times noted on the hot path and written later, together: ``last_seen_at`` of users
(``lastseen.py``) and ``last_used_at`` of tokens (``tokenuse.py``).

A key (a user, a token) is noted at most once per resolution; one background task writes
what was noted, in small transactions in key order. A request never waits for a write of
its own, and the write load is one row per active key per period, not one per request. A
crash can lose the last period's times, never anything a client was told was stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from chatserver.db import Conn, Database, now_us
from chatserver.tasks import cancel_and_wait

log = logging.getLogger("chatserver")

K = TypeVar("K", int, str)
# Writes a chunk of (key, time in µs) pairs in the caller's transaction.
Writer = Callable[[Conn, list[tuple[K, int]]], Awaitable[object]]
FLUSH_CHUNK = 200


class BatchedTimes(Generic[K]):
    """``note`` on the hot path; ``flush`` every ``period`` seconds on a task of its own.

    Keys not noted for ``forget_after`` seconds are forgotten (checked as often), so the
    table of keys stays as small as the set of active ones."""

    def __init__(
        self,
        db: Database,
        resolution: float,
        write: Writer[K],
        *,
        period: float,
        forget_after: float,
        what: str,
    ) -> None:
        self._db = db
        self._resolution = resolution
        self._write: Writer[K] = write
        self._period = period
        self._forget_after = forget_after
        self._what = what  # for the log line when a flush fails
        self._noted: dict[K, float] = {}  # key -> monotonic time of its last note
        self._pending: dict[K, int] = {}  # key -> time to write (µs)
        self._task: asyncio.Task[None] | None = None

    def note(self, key: K) -> None:
        """The key was used now: queue a write unless one was queued within a resolution."""
        if self._mark(key) is not None:
            self._pending[key] = now_us()

    def note_first(self, key: K) -> bool:
        """``note``, except that a key this process had not noted before is not queued:
        True then, and the caller writes that first time itself, at once."""
        first = self._mark(key)
        if first is None:
            return False
        if not first:
            self._pending[key] = now_us()
        return first

    def _mark(self, key: K) -> bool | None:
        """None: noted within a resolution (nothing due); else whether it is the first."""
        now = time.monotonic()
        previous = self._noted.get(key)
        if previous is not None and now - previous < self._resolution:
            return None
        self._noted[key] = now
        return previous is None

    def queue(self, key: K) -> None:
        """Queue a write of now, whatever was noted (a stream still open)."""
        self._pending[key] = now_us()

    async def flush(self) -> None:
        """Write every queued time, a few hundred keys per transaction."""
        # Sorted: two nodes flushing the same rows lock them in one order (no deadlock).
        # Small transactions: each runs on the event loop, and a thousand updates in one
        # would hold every request up for tens of milliseconds.
        pending, self._pending = sorted(self._pending.items()), {}
        for start in range(0, len(pending), FLUSH_CHUNK):
            async with self._db.transaction() as conn:
                await self._write(conn, pending[start : start + FLUSH_CHUNK])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the background writer and write what is still queued."""
        await cancel_and_wait(self._task)
        await self.flush()

    async def _run(self) -> None:
        forget_due = time.monotonic() + self._forget_after
        while True:
            await asyncio.sleep(self._period)
            try:
                await self.flush()
            except Exception:  # the database may be back next round; these times are lost
                log.exception("writing %s failed", self._what)
            if (now := time.monotonic()) >= forget_due:
                forget_due = now + self._forget_after
                self._forget_idle(now - self._forget_after)

    def _forget_idle(self, cutoff: float) -> None:
        for key in [key for key, noted in self._noted.items() if noted < cutoff]:
            del self._noted[key]
