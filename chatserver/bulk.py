"""``chatserver bulk-load``: many messages between two users, with every counter kept right.

For benchmarks and load tests (a 1,000,000-message inbox without a request per message);
real traffic goes through ``actions.send_message``.
"""

from __future__ import annotations

import logging

from chatserver import store
from chatserver.config import ConfigError, Settings
from chatserver.db import Database, open_database
from chatserver.services import now_us

log = logging.getLogger("chatserver")
BATCH = 20_000


async def bulk_load(settings: Settings, sender_id: int, recipient_id: int, count: int) -> None:
    if count < 1:
        raise ConfigError("--count must be at least 1")
    db = await open_database(settings.database_url)
    try:
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            await _load_batch(db, sender_id, recipient_id, size, done)
            done += size
        log.info("loaded %d messages from user %d to user %d", count, sender_id, recipient_id)
    finally:
        await db.close()


async def _load_batch(db: Database, sender: int, recipient: int, size: int, done: int) -> None:
    lo, hi = sorted((sender, recipient))
    async with db.transaction() as conn:
        first_seq = await store.reserve_received(conn, recipient, size)
        if first_seq is None or not await store.add_sent(conn, sender, size):
            raise ConfigError(f"users {sender} and {recipient} must both exist")
        now = now_us()
        first_in_conversation = await store.conversation_count(conn, lo, hi) + 1
        rows = [
            (
                sender,
                recipient,
                f"bulk message {done + i + 1}",
                now,
                first_seq + i,
                lo,
                hi,
                first_in_conversation + i,
            )
            for i in range(size)
        ]
        await store.insert_messages(conn, rows)
