"""``last_seen_at``: a fetch moves it to now, written at most once per resolution per user.

``LastSeen`` is the one writer outside ``actions`` (a timestamp, not a record anyone asked
to change): its background task (``batched.py``) writes what fetches and open streams
noted, and a stream that opens has its first time written at once (``touch``).

The first fetch this process serves for a user is written in that fetch's own transaction,
so the user (and everyone else) sees it set as soon as the response arrives. Later fetches
only note their time; a background task writes every noted user together, one transaction
per resolution period. Without that, a busy server with many users made one durable commit
per user per second on its read path: with many users, a heavy load of durable writes
beside the reads themselves. A crash can lose the last period's updates of a timestamp,
never a message or a received mark.
"""

from __future__ import annotations

from chatserver import store
from chatserver.batched import BatchedTimes
from chatserver.db import Database, now_us

# A user not seen for this long is forgotten, so the table of users stays as small as the
# set of active ones; their next fetch is written at once again.
FORGET_AFTER_SECONDS = 600.0


class LastSeen(BatchedTimes[int]):
    def __init__(self, db: Database, resolution_seconds: float) -> None:
        super().__init__(
            db,
            resolution_seconds,
            store.set_last_seen_each,
            period=resolution_seconds,
            forget_after=FORGET_AFTER_SECONDS,
            what="last_seen_at",
        )

    def note_fetch(self, user_id: int) -> bool:
        """Record a fetch; True when the caller must write last_seen_at itself, now."""
        return self.note_first(user_id)

    async def touch(self, user_id: int) -> None:
        """``note_fetch``, writing at once when it says so (a stream opening)."""
        if self.note_fetch(user_id):
            async with self._db.transaction() as conn:
                await store.set_last_seen(conn, user_id, now_us())
