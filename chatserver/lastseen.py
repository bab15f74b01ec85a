"""``last_seen_at``: a fetch moves it to now, written at most once per resolution per user.

``LastSeen`` is the one writer outside ``actions`` (a timestamp, not a record anyone asked
to change): its background task writes what fetches and open streams noted, and a stream
that opens has its first time written at once (``touch``).

The first fetch this process serves for a user is written in that fetch's own transaction,
so the user (and everyone else) sees it set as soon as the response arrives. Later fetches
only note their time; a background task writes every noted user together, one transaction
per resolution period. Without that, a busy server with many users made one durable commit
per user per second on its read path: with many users, a heavy load of durable writes
beside the reads themselves. A crash can lose the last period's updates of a timestamp,
never a message or a received mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from chatserver import store
from chatserver.db import Database, now_us

log = logging.getLogger("chatserver")

# A user not seen for this long is forgotten, so the table of users stays as small as the
# set of active ones; their next fetch is written at once again.
FORGET_AFTER_SECONDS = 600.0
FLUSH_CHUNK = 200


class LastSeen:
    def __init__(self, db: Database, resolution_seconds: float) -> None:
        self._db = db
        self._resolution = resolution_seconds
        self._noted: dict[int, float] = {}  # user id -> monotonic time of their last note
        self._pending: dict[int, int] = {}  # user id -> last_seen_at to write (µs)
        self._task: asyncio.Task[None] | None = None

    def note_fetch(self, user_id: int) -> bool:
        """Record a fetch; True when the caller must write last_seen_at itself, now."""
        now = time.monotonic()
        previous = self._noted.get(user_id)
        if previous is not None and now - previous < self._resolution:
            return False
        self._noted[user_id] = now
        if previous is None:
            return True
        self._pending[user_id] = now_us()
        return False

    def note(self, user_id: int) -> None:
        """Record that the user is here now (an open stream); written within a period."""
        self._pending[user_id] = now_us()

    async def touch(self, user_id: int) -> None:
        """``note_fetch``, writing at once when it says so (a stream opening)."""
        if self.note_fetch(user_id):
            async with self._db.transaction() as conn:
                await store.set_last_seen(conn, user_id, now_us())

    async def flush(self) -> None:
        """Write every noted time, a few hundred users per transaction."""
        # In id order, as sends lock users: two nodes flushing at once cannot deadlock.
        pending, self._pending = sorted(self._pending.items()), {}
        # Small transactions: each runs on the event loop, and a thousand updates in one
        # would hold every request up for tens of milliseconds.
        for start in range(0, len(pending), FLUSH_CHUNK):
            async with self._db.transaction() as conn:
                await store.set_last_seen_each(conn, pending[start : start + FLUSH_CHUNK])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the background writer and write what is still noted."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        forget_due = time.monotonic() + FORGET_AFTER_SECONDS
        while True:
            await asyncio.sleep(self._resolution)
            try:
                await self.flush()
            except Exception:  # the database may be back next round; these times are lost
                log.exception("writing last_seen_at failed")
            if time.monotonic() >= forget_due:
                forget_due = time.monotonic() + FORGET_AFTER_SECONDS
                self._forget_idle(forget_due - 2 * FORGET_AFTER_SECONDS)

    def _forget_idle(self, cutoff: float) -> None:
        idle = [user_id for user_id, noted in self._noted.items() if noted < cutoff]
        for user_id in idle:
            del self._noted[user_id]
