"""Revocations made by other processes (the command line), read from the database.

The command line writes each revocation to ``revocations`` in the transaction that makes
it, and also publishes the API's ``revoke`` control event when Redis is configured. A node
without Redis (one SQLite server) shares no broker with the command line, so every node
polls the table: a few rows at most, by primary key, every ``POLL_SECONDS``. Applying a
revocation twice (from Redis and from the table) is harmless.
"""

from __future__ import annotations

import asyncio
import logging

from chatserver.db import Database
from chatserver.events import RevokeEvent
from chatserver.hub import Hub
from chatserver.store import admin as store_admin

log = logging.getLogger("chatserver")

# Streams of a deactivated user close within a second: half of it at most waiting for a poll.
POLL_SECONDS = 0.25
BATCH = 500


class RevocationFollower:
    """Polls ``revocations`` and applies new rows to this node's hub."""

    def __init__(self, db: Database, hub: Hub) -> None:
        self._db = db
        self._hub = hub
        self._last = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start after the newest row: older ones were made before this node served."""
        async with self._db.read() as conn:
            self._last = await store_admin.last_revocation_id(conn)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def poll(self) -> int:
        """Apply the rows after the last one seen; how many there were."""
        async with self._db.read() as conn:
            rows = await store_admin.revocations_after(conn, self._last, BATCH)
        for row in rows:
            self._hub.revoke(RevokeEvent(row.user_id, row.token_hash))
            self._last = row.id
        return len(rows)

    async def _follow(self) -> None:
        while True:
            try:
                while await self.poll() == BATCH:
                    pass
            except Exception:  # the database may be briefly unavailable: try again
                log.exception("reading revocations failed")
            await asyncio.sleep(POLL_SECONDS)
