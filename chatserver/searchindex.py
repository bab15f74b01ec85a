"""SQLite: the words of edited and deleted messages leave the full-text index soon after.

FTS5 removes an entry from what a search finds at once, but (before SQLite 3.44's
``secure-delete``) its words stay in the index's older segments until those are merged.
After an edit or a deletion on this node, ``SearchPurge`` merges the index into one
segment within ``delay`` seconds (``store.merge_search_index``), on the group commit's
thread in the transaction of its next COMMIT: the event loop keeps serving meanwhile, and
writes wait for the merge. It rewrites the index once per round, whatever the number of
changes in it; ``delay`` bounds how often that happens. PostgreSQL needs none of this: the
old row versions are not visible to any query and VACUUM reclaims them.
"""

from __future__ import annotations

import asyncio
import logging

from chatserver import store
from chatserver.db import Database, SqliteDatabase
from chatserver.tasks import cancel_and_wait

log = logging.getLogger("chatserver")


class SearchPurge:
    def __init__(self, db: Database, delay: float) -> None:
        self._db = db
        self._delay = delay
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def note_change(self) -> None:
        """A message's words left the index (edit, deletion): purge them soon."""
        if self._db.dialect == "sqlite":
            self._due.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(self._delay)
            self._due.clear()  # a change during the merge asks for another round
            try:
                await self.merge()
            except Exception:  # the next change tries again
                log.exception("merging the search index failed")

    async def merge(self) -> None:
        """Merge the index into one segment at the next COMMIT."""
        if isinstance(self._db, SqliteDatabase):
            await self._db.at_next_commit(store.merge_search_index)
