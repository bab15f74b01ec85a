"""store/search.py on SQLite: the group commit indexes new messages and keeps the FTS5 index
merged as it grows, and a merge asked for runs at the next COMMIT (the search purge's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatserver import store
from chatserver.config import sqlite_path
from chatserver.db import SqliteDatabase
from chatserver.migrations import upgrade
from chatserver.store.search import index_new_messages
from tests.test_store import add_user, send

MIN_GROWTH = 8


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[SqliteDatabase]:
    """SQLite with a search indexer that merges after ``MIN_GROWTH`` new messages."""
    await asyncio.to_thread(upgrade, sqlite_url)
    database = SqliteDatabase(
        sqlite_path(sqlite_url), before_commit=store.SearchIndexer(min_growth=MIN_GROWTH)
    )
    try:
        yield database
    finally:
        await database.close()


async def segments(db: SqliteDatabase) -> int:
    """How many segments the FTS5 index has (each has rows in its ``_idx`` table)."""
    async with db.read() as conn:
        return int(await conn.fetch_val("SELECT count(DISTINCT segid) FROM message_search_idx"))


async def found(db: SqliteDatabase, user_id: int, words: str) -> list[int]:
    query = store.SearchQuery(user_id, store.words_of(words))
    async with db.read() as conn:
        _, ids = await store.search_page(conn, "sqlite", query, 0, 100)
    return ids


async def test_the_index_is_merged_into_one_segment_each_time_it_grows_enough(
    db: SqliteDatabase,
) -> None:
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    sent = [(await send(db, alice.id, bob.id, f"note {i}")).id for i in range(3)]
    assert await segments(db) == 3  # one per COMMIT, below FTS5's own merge threshold
    sent += [(await send(db, alice.id, bob.id, f"note {i}")).id for i in range(3, MIN_GROWTH)]
    assert await segments(db) == 1  # the COMMIT that indexed the 8th merged the index
    sent.append((await send(db, bob.id, alice.id, "note 8")).id)
    assert await segments(db) == 2  # a quarter of 8 is less than the minimum: no merge yet
    assert await found(db, alice.id, "note") == sent[::-1]  # every message, newest first
    assert await found(db, bob.id, "8") == [sent[-1]]


async def test_the_messages_indexed_at_one_commit_make_one_segment(sqlite_url: str) -> None:
    """FTS5 writes its pending words out whenever a rowid is lower than the one before: in
    the wrong order, each message of a batch would make a segment of its own."""
    await asyncio.to_thread(upgrade, sqlite_url)
    unindexed = SqliteDatabase(sqlite_path(sqlite_url))  # sends that the index does not see
    try:
        alice, bob = await add_user(unindexed, "alice"), await add_user(unindexed, "bob")
        sent = [(await send(unindexed, alice.id, bob.id, f"batch {i}")).id for i in range(6)]
        await unindexed.at_next_commit(index_new_messages)
        assert await segments(unindexed) == 1
        assert await found(unindexed, bob.id, "batch") == sent[::-1]
    finally:
        await unindexed.close()


async def test_a_merge_asked_for_runs_in_the_next_commit(db: SqliteDatabase) -> None:
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    first = await send(db, alice.id, bob.id, "hello there")
    second = await send(db, bob.id, alice.id, "hello again")
    assert await segments(db) == 2
    await db.at_next_commit(store.merge_search_index)  # no writer: a transaction carries it
    assert await segments(db) == 1
    assert await found(db, alice.id, "hello") == [second.id, first.id]


async def test_every_page_of_a_search_carries_the_count_of_all_its_matches(
    db: SqliteDatabase,
) -> None:
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    sent = [(await send(db, alice.id, bob.id, f"lunch {i}")).id for i in range(5)]
    await send(db, alice.id, bob.id, "something else")
    query = store.SearchQuery(bob.id, ("lunch",))
    newest_first = sent[::-1]
    async with db.read() as conn:
        for offset in (0, 2, 4, 6):  # full pages, the last partial one, one past the end
            page = await store.search_page(conn, "sqlite", query, offset, 2)
            assert page == (5, newest_first[offset : offset + 2])
        assert await store.search_page(conn, "sqlite", query, 0, 5) == (5, newest_first)
        nothing = store.SearchQuery(bob.id, ("dinner",))
        assert await store.search_page(conn, "sqlite", nothing, 0, 2) == (0, [])
        assert await store.search_page(conn, "sqlite", nothing, 4, 2) == (0, [])
