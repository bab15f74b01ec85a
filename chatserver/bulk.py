"""``chatserver bulk-load``: many messages between two users, with every counter, position,
event and conversation kept right.

For benchmarks and load tests (a 1,000,000-message inbox without a request per message);
real traffic goes through ``actions.send_message``.
"""

from __future__ import annotations

import logging

from chatserver import store
from chatserver.config import ConfigError, Settings
from chatserver.db import Conn, Database, open_database
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
    """One transaction: counters, numbers and positions reserved, then the messages (each
    carries its events' positions) and both conversation rows, as ``actions.send_message``
    keeps them."""
    lo, hi = sorted((sender, recipient))
    async with db.transaction() as conn:
        first_seq = await store.reserve_received(conn, recipient, size, unread=sender != recipient)
        if first_seq is None or not await store.add_sent(conn, sender, size):
            raise ConfigError(f"users {sender} and {recipient} must both exist")
        positions = await _reserve_positions(conn, sender, recipient, size)
        conversation = await store.get_conversation(conn, recipient, sender)
        first_pair = (conversation.received_count if conversation else 0) + 1
        first_in_conversation = await store.conversation_count(conn, lo, hi) + 1
        now = now_us()
        rows = [
            store.BulkMessage(
                sender,
                recipient,
                f"bulk message {done + i + 1}",
                now,
                first_seq + i,
                lo,
                hi,
                first_in_conversation + i,
                first_pair + i,
                positions.sender + i,
                positions.recipient + i,
            )
            for i in range(size)
        ]
        await store.insert_messages(conn, rows)
        last_id = await store.latest_loaded_id(conn, recipient, first_seq)
        await store.count_many_in_conversations(conn, sender, recipient, last_id, size)


async def _reserve_positions(conn: Conn, sender: int, recipient: int, size: int) -> store.Positions:
    """The first of ``size`` event positions for each user (the same ones for one user)."""
    first: dict[int, int] = {}
    for user_id in sorted({sender, recipient}):
        last = await store.take_event_positions(conn, user_id, size)
        assert last is not None  # both exist: checked above
        first[user_id] = last - size + 1
    return store.Positions(first[sender], first[recipient])
