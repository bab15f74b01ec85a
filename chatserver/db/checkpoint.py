"""The SQLite WAL checkpointer: copies the WAL back into the database file in the background.

SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages: that
commit then also copies the pages and fsyncs the database file while every writer waits for
it. So the write connection turns it off, and a PASSIVE checkpoint runs here instead, on a
connection and a thread of its own: it blocks no reader and no writer, and with
``synchronous=FULL`` it fsyncs the WAL before and the file after.

SQLite starts the WAL over only when a writer finds it wholly copied back and no reader in
it; under a steady stream of writes that moment never comes and the file grows for as long
as writes keep coming. So a WAL still large after a checkpoint is restarted between two
batches of the group commit (``due_restart``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable

from chatserver.tasks import cancel_and_wait

log = logging.getLogger("chatserver")

# How often the WAL is copied back into the database file.
CHECKPOINT_INTERVAL_SECONDS = 1.0
# A WAL with more frames than this after a checkpoint is restarted between two batches:
# 64 MiB with our 2 KiB pages.
RESTART_WAL_FRAMES = 32_768
# How long a restart waits for readers (of any process) to let go of the WAL, writes held.
RESTART_WAIT_MS = 50


class Checkpointer:
    """Checkpoints on its own connection ``conn`` to the database, which it owns."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        interval: float = CHECKPOINT_INTERVAL_SECONDS,
        restart_frames: int = RESTART_WAL_FRAMES,
    ) -> None:
        self._conn = conn
        self._conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        self._interval = interval
        self._restart_frames = restart_frames
        self._running: asyncio.Future[int] | None = None  # a checkpoint on its thread
        self._restart_due = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Checkpoint every ``interval`` seconds until ``stop``."""
        self._task = asyncio.get_running_loop().create_task(self._checkpoint_forever())

    async def checkpoint(self) -> int:
        """One round, as the background task runs it: a PASSIVE checkpoint, and when the WAL
        is still larger than ``restart_frames`` a second one and a restart after the next
        COMMIT. Returns the number of frames the WAL held."""
        frames = await self._passive_checkpoint()
        if frames > self._restart_frames:
            # A second pass copies what was written during the first, so the restart,
            # which holds the writers, has only a few frames left to copy.
            await self._passive_checkpoint()
            self._restart_due = True
        return frames

    def due_restart(self) -> Callable[[], None] | None:
        """The WAL restart, if one is due and no checkpoint is using the connection; the
        group commit runs it on its thread right after a COMMIT (see ``GroupCommit``)."""
        if not self._restart_due or (self._running is not None and not self._running.done()):
            return None
        self._restart_due = False
        return self._restart_wal

    async def stop(self) -> None:
        """Stop checkpointing; a checkpoint already on its thread finishes first."""
        await cancel_and_wait(self._task)
        if self._running is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._running

    def close(self) -> None:
        """Close the connection; after ``stop`` and after the last COMMIT (a restart runs
        on the commit thread)."""
        self._conn.close()

    async def _checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.checkpoint()
            except sqlite3.Error as exc:  # busy or I/O trouble: the next round retries
                log.warning("WAL checkpoint failed: %s", exc)

    async def _passive_checkpoint(self) -> int:
        # Shielded: ``stop`` waits for a running checkpoint instead of closing its
        # connection under the thread.
        self._running = asyncio.ensure_future(asyncio.to_thread(self._checkpoint))
        return await asyncio.shield(self._running)

    def _checkpoint(self) -> int:
        """A PASSIVE checkpoint; the number of frames in the WAL."""
        _, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)

    def _restart_wal(self) -> None:
        """Copy the rest of the WAL into the file and make the next writer start it over.

        Runs on the commit thread right after a COMMIT, with the write lock still held, so
        no frame is added meanwhile; it waits up to ``RESTART_WAIT_MS`` for readers to let
        go of the WAL (ours do at the end of the loop's turn), else the next round retries.
        That bounds the WAL to about ``restart_frames`` and one interval of writes. Writers
        arriving meanwhile queue and commit together after it, at most once an interval.
        """
        try:
            self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except sqlite3.Error as exc:  # the next round retries; no write depends on it
            log.warning("WAL restart failed: %s", exc)
