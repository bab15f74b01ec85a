"""``chatserver bulk-load``: many messages between two users, with every counter, position,
event and conversation kept right.

For benchmarks and load tests (a 1,000,000-message inbox without a request per message);
real traffic goes through ``actions.send_message``.
"""

from __future__ import annotations

import logging

from chatserver import store
from chatserver.config import ConfigError, Settings
from chatserver.db import Conn, open_database
from chatserver.services import now_us

log = logging.getLogger("chatserver")
BATCH = 20_000
# Senders written per transaction by ``bulk_load_senders`` (one commit each, not per sender).
SENDERS_PER_TRANSACTION = 500


async def bulk_load(settings: Settings, sender_id: int, recipient_id: int, count: int) -> None:
    if count < 1:
        raise ConfigError("--count must be at least 1")
    db = await open_database(settings.database_url)
    try:
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            async with db.transaction() as conn:
                await _load_batch(conn, sender_id, recipient_id, size, done)
            done += size
        log.info("loaded %d messages from user %d to user %d", count, sender_id, recipient_id)
    finally:
        await db.close()


async def bulk_load_senders(
    settings: Settings, senders: range, recipient_id: int, count: int
) -> None:
    """``count`` messages (at most ``BATCH``) from each of ``senders`` to one recipient:
    as many conversations, e.g. for the presence benchmark."""
    if not 1 <= count <= BATCH:
        raise ConfigError(f"--count must be 1 to {BATCH} with --last-sender")
    db = await open_database(settings.database_url)
    try:
        for start in range(0, len(senders), SENDERS_PER_TRANSACTION):
            async with db.transaction() as conn:
                for sender in senders[start : start + SENDERS_PER_TRANSACTION]:
                    await _load_batch(conn, sender, recipient_id, count, 0)
        log.info("loaded %d messages from each of %d users", count, len(senders))
    finally:
        await db.close()


async def _load_batch(conn: Conn, sender: int, recipient: int, size: int, done: int) -> None:
    """Counters, numbers and positions reserved, then the messages (each carries its
    events' positions) and both conversation rows, as ``actions.send_message`` keeps them."""
    lo, hi = sorted((sender, recipient))
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
