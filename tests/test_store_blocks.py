"""store/blocks.py on both databases, and the bulk loader's many-senders form (the
presence benchmark's many conversations)."""

from __future__ import annotations

import pytest

from chatserver import store
from chatserver.bulk import bulk_load_senders
from chatserver.config import ConfigError, Settings
from chatserver.db import Database
from tests.test_store import NOW, add_user, db, send

__all__ = ["db"]  # the fixture, used by name


async def test_blocks_are_added_once_listed_and_removed(db: Database) -> None:
    alice, bob, carol = [await add_user(db, name) for name in ("alice", "bob", "carol")]
    async with db.transaction() as conn:
        assert await store.insert_block(conn, alice.id, bob.id, NOW) is True
        assert await store.insert_block(conn, alice.id, bob.id, NOW + 5) is False  # kept
        assert await store.insert_block(conn, alice.id, carol.id, NOW + 1) is True
        assert await store.insert_block(conn, carol.id, bob.id, NOW) is True
    async with db.read() as conn:
        assert await store.list_blocks(conn, alice.id) == [(carol.id, NOW + 1), (bob.id, NOW)]
        assert await store.blocks(conn, alice.id, bob.id) is True
        assert await store.blocks(conn, bob.id, alice.id) is False  # one direction only
        assert await store.blockers_among(conn, bob.id, [alice.id, carol.id]) == {
            alice.id,
            carol.id,
        }
        assert await store.blockers_among(conn, bob.id, [carol.id]) == {carol.id}
        assert await store.blockers_among(conn, bob.id, []) == set()
    async with db.transaction() as conn:
        # Counting a message for its recipient says whether the recipient blocks the sender.
        to_alice = await store.count_for_receive(conn, alice.id, bob.id)
        to_bob = await store.count_for_receive(conn, bob.id, alice.id)
        assert to_alice == (1, 1, True)
        assert to_bob == (1, 1, False)
    async with db.transaction() as conn:
        assert await store.delete_block(conn, alice.id, bob.id) is True
        assert await store.delete_block(conn, alice.id, bob.id) is False
    async with db.read() as conn:
        assert await store.blocks(conn, alice.id, bob.id) is False


async def test_typing_target_and_presence_audience_follow_conversations_and_blocks(
    db: Database,
) -> None:
    alice, bob, carol, dave = [await add_user(db, n) for n in ("alice", "bob", "carol", "dave")]
    await send(db, bob.id, alice.id, "hi")
    await send(db, alice.id, carol.id, "hi")
    await send(db, alice.id, alice.id, "a note to myself")
    async with db.transaction() as conn:
        await store.insert_block(conn, alice.id, carol.id, NOW)  # alice blocks carol
    async with db.read() as conn:
        assert await store.typing_target(conn, bob.id, alice.id) == (False,)
        assert await store.typing_target(conn, carol.id, alice.id) == (True,)  # blocked
        assert await store.typing_target(conn, dave.id, alice.id) is None  # no conversation
        # Not carol (blocked), not alice herself, not dave (no conversation).
        assert await store.presence_audience(conn, alice.id) == [bob.id]
        assert await store.presence_audience(conn, carol.id) == [alice.id]


async def test_bulk_loading_from_many_senders_gives_a_conversation_each(
    db: Database, database_url: str
) -> None:
    users = [await add_user(db, f"peer{n}") for n in range(5)]
    target = users[0]
    senders = range(users[1].id, users[-1].id + 1)
    await bulk_load_senders(Settings(database_url=database_url), senders, target.id, 2)
    async with db.read() as conn:
        listed = await store.list_conversations(conn, target.id, None, 10)
        assert sorted(c.peer_id for c in listed) == list(senders)
        assert {c.received_count for c in listed} == {2}
        assert await store.unread_total(conn, target.id) == 8
        assert sorted(await store.presence_audience(conn, target.id)) == list(senders)
    with pytest.raises(ConfigError):
        await bulk_load_senders(Settings(database_url=database_url), senders, target.id, 0)
