"""chatserver.store on both engines: what each statement returns, ``None`` for not found,
and that no store function commits (only the caller's transaction does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatserver import store
from chatserver.db import Database, UniqueViolation, open_database
from chatserver.migrations import upgrade
from chatserver.store import MessageFilter, MessageRow, StoredResponse, UserRow

NOW = 1_700_000_000_000_000


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, database_url)
    database = await open_database(database_url)
    try:
        yield database
    finally:
        await database.close()


async def add_user(db: Database, name: str) -> UserRow:
    async with db.transaction() as conn:
        return await store.insert_user(
            conn, name.title(), f"{name}@example.com", "hash", (name, f"{name}@example.com"), NOW
        )


async def send(db: Database, sender: int, recipient: int, body: str, at: int = NOW) -> MessageRow:
    """A send as ``actions`` runs it: count on both users' rows, then insert."""
    async with db.transaction() as conn:
        if sender != recipient:
            assert await store.count_for_send(conn, sender)
        seq = await store.count_for_receive(conn, recipient, also_sent=sender == recipient)
        assert seq is not None
        return await store.insert_message(conn, sender, recipient, body, at, seq)


async def get_user(db: Database, user_id: int) -> UserRow:
    async with db.read() as conn:
        user = await store.get_user(conn, user_id)
    assert user is not None
    return user


@pytest.fixture
async def three(db: Database) -> tuple[UserRow, UserRow, UserRow]:
    return await add_user(db, "alice"), await add_user(db, "bob"), await add_user(db, "carol")


# ---------------------------------------------------------------- users


async def test_insert_user_returns_the_stored_row_and_lookups_find_it(db: Database) -> None:
    alice = await add_user(db, "alice")
    assert alice == UserRow(alice.id, "Alice", "alice@example.com", "hash", NOW, None, 0, 0)
    async with db.read() as conn:
        assert await store.get_user(conn, alice.id) == alice
        assert await store.find_user_by_username(conn, "alice") == alice
        assert await store.find_user_by_login(conn, "alice") == alice
        assert await store.find_user_by_login(conn, "alice@example.com") == alice


async def test_user_lookups_return_none_when_not_found(db: Database) -> None:
    await add_user(db, "alice")
    async with db.read() as conn:
        assert await store.get_user(conn, 999_999) is None
        assert await store.find_user_by_username(conn, "nobody") is None
        assert await store.find_user_by_username(conn, "alice@example.com") is None
        assert await store.find_user_by_login(conn, "nobody") is None


async def test_a_taken_username_or_email_key_raises_unique_violation(db: Database) -> None:
    await add_user(db, "alice")
    for keys in [("alice", "other@example.com"), ("other", "alice@example.com")]:
        with pytest.raises(UniqueViolation):
            async with db.transaction() as conn:
                await store.insert_user(conn, "X", "x@example.com", "h", keys, NOW)


async def test_last_seen_only_moves_forward(db: Database) -> None:
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    async with db.transaction() as conn:
        await store.set_last_seen(conn, alice.id, NOW + 10)
        await store.set_last_seen(conn, alice.id, NOW + 5)  # older: ignored
        await store.set_last_seen_each(conn, [(alice.id, NOW + 7), (bob.id, NOW + 3)])
    assert (await get_user(db, alice.id)).last_seen_at == NOW + 10
    assert (await get_user(db, bob.id)).last_seen_at == NOW + 3


async def test_counters_report_whether_the_user_exists(db: Database) -> None:
    alice = await add_user(db, "alice")
    async with db.transaction() as conn:
        assert await store.count_for_send(conn, alice.id) is True
        assert await store.count_for_send(conn, 999_999) is False
        assert await store.count_for_receive(conn, alice.id, also_sent=False) == 1
        assert await store.count_for_receive(conn, alice.id, also_sent=True) == 2
        assert await store.count_for_receive(conn, 999_999, also_sent=False) is None
        assert await store.reserve_received(conn, alice.id, 5) == 3  # 3..7
        assert await store.reserve_received(conn, 999_999, 5) is None
        assert await store.add_sent(conn, alice.id, 4) is True
        assert await store.add_sent(conn, 999_999, 4) is False
    async with db.read() as conn:
        user = await store.get_user(conn, alice.id)
    assert user is not None
    assert (user.received_count, user.unread_count) == (7, 7)


async def test_delete_user_removes_what_they_received_and_renumbers_what_they_sent(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    to_bob = await send(db, alice.id, bob.id, "to bob")
    from_bob = await send(db, bob.id, alice.id, "from bob")
    await send(db, alice.id, bob.id, "to bob again")
    await send(db, carol.id, alice.id, "from carol")
    async with db.transaction() as conn:
        await store.insert_token(conn, bob.id, "bob-token", NOW)
        response = StoredResponse("hash", 201, "{}")
        await store.insert_idempotent_response(conn, bob.id, "key", response, NOW)
        assert await store.delete_user(conn, bob.id) is True
        assert await store.delete_user(conn, bob.id) is False
    async with db.read() as conn:
        assert await store.get_user(conn, bob.id) is None
        assert await store.find_token_user(conn, "bob-token") is None
        assert await store.get_idempotent_response(conn, bob.id, "key") is None
        left = await store.get_messages(conn, [to_bob.id, from_bob.id])
        assert [m.id for m in left] == [from_bob.id]
        # The conversation keeps a dense count: bob's one sent message is now number 1.
        assert await store.conversation_count(conn, alice.id, bob.id) == 1


# ---------------------------------------------------------------- tokens


async def test_tokens_find_their_user_until_deleted(db: Database) -> None:
    alice = await add_user(db, "alice")
    async with db.transaction() as conn:
        await store.insert_token(conn, alice.id, "t1", NOW)
    async with db.read() as conn:
        assert await store.find_token_user(conn, "t1") == alice.id
        assert await store.find_token_user(conn, "t2") is None
    async with db.transaction() as conn:
        await store.delete_token(conn, "t1")
        await store.delete_token(conn, "t1")  # deleting again is no error
    async with db.read() as conn:
        assert await store.find_token_user(conn, "t1") is None


async def test_a_token_hash_is_unique(db: Database) -> None:
    alice = await add_user(db, "alice")
    async with db.transaction() as conn:
        await store.insert_token(conn, alice.id, "t1", NOW)
    with pytest.raises(UniqueViolation):
        async with db.transaction() as conn:
            await store.insert_token(conn, alice.id, "t1", NOW)


# ---------------------------------------------------------------- messages


async def test_insert_message_returns_the_row_that_get_messages_reads(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, _ = three
    sent = await send(db, alice.id, bob.id, "hello")
    assert sent == MessageRow(sent.id, alice.id, bob.id, "hello", NOW, None)
    async with db.read() as conn:
        assert await store.get_messages(conn, [sent.id, 999_999]) == [sent]
        assert await store.get_messages(conn, [999_999]) == []


async def test_inbox_pages_count_and_list_newest_first(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    ids = [(await send(db, alice.id if n % 2 else carol.id, bob.id, f"m{n}")).id for n in range(5)]
    async with db.read() as conn:
        assert await store.inbox_page(conn, bob.id, 0, 2) == (5, ids[:-3:-1])
        assert await store.inbox_page(conn, bob.id, 4, 2) == (5, [ids[0]])
        assert await store.inbox_page(conn, bob.id, 10, 2) == (5, [])
        assert await store.inbox_page(conn, alice.id, 0, 2) == (0, [])
        assert await store.inbox_page(conn, 999_999, 0, 2) == (0, [])


async def test_conversation_pages_hold_both_directions_and_only_them(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    a = await send(db, alice.id, bob.id, "a")
    b = await send(db, bob.id, alice.id, "b")
    await send(db, carol.id, bob.id, "elsewhere")
    c = await send(db, alice.id, bob.id, "c")
    async with db.read() as conn:
        assert await store.conversation_page(conn, bob.id, alice.id, 0, 2) == (3, [c.id, b.id])
        assert await store.conversation_page(conn, alice.id, bob.id, 2, 2) == (3, [a.id])
        assert await store.conversation_page(conn, alice.id, bob.id, 5, 2) == (3, [])
        assert await store.conversation_page(conn, alice.id, carol.id, 0, 2) == (0, [])
        assert await store.conversation_count(conn, alice.id, bob.id) == 3
        assert await store.conversation_count(conn, alice.id, carol.id) == 0


async def test_filters_list_and_count_the_same_messages(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    m = [(await send(db, (alice, carol)[n % 2].id, bob.id, f"m{n}")).id for n in range(6)]
    async with db.transaction() as conn:
        assert await store.mark_received(conn, bob.id, m[:2], NOW + 1) != []
    cases = {
        MessageFilter(bob.id): m[::-1],
        MessageFilter(bob.id, unread=True): m[:1:-1],
        MessageFilter(bob.id, with_user=alice.id): m[::2][::-1],
        MessageFilter(bob.id, with_user=carol.id, unread=True): [m[5], m[3]],
        MessageFilter(bob.id, before_id=m[3]): [m[2], m[1], m[0]],
        MessageFilter(bob.id, after_id=m[3]): [m[4], m[5]],  # oldest first
        MessageFilter(bob.id, after_id=m[0], before_id=m[4]): [m[1], m[2], m[3]],
        MessageFilter(alice.id): [],
    }
    async with db.read() as conn:
        for f, expected in cases.items():
            assert await store.list_message_ids(conn, f, 100, 0) == expected, f
            assert await store.count_messages(conn, f) == len(expected), f
        paged = MessageFilter(bob.id)
        assert await store.list_message_ids(conn, paged, 2, 1) == [m[4], m[3]]


async def test_mark_received_marks_only_the_unread_messages_of_the_recipient(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, _ = three
    first = await send(db, alice.id, bob.id, "one")
    second = await send(db, alice.id, bob.id, "two")
    to_alice = await send(db, bob.id, alice.id, "back")
    async with db.transaction() as conn:
        marked = await store.mark_received(conn, bob.id, [first.id, to_alice.id], NOW + 1)
        assert marked == [(first.id, alice.id)]  # alice's message is not bob's to mark
        assert await store.mark_received(conn, bob.id, [first.id], NOW + 2) == []  # already
    async with db.read() as conn:
        rows = {m.id: m for m in await store.get_messages(conn, [first.id, second.id])}
        user = await store.get_user(conn, bob.id)
    assert rows[first.id].received_at == NOW + 1
    assert rows[second.id].received_at is None
    assert user is not None
    assert user.unread_count == 1


async def test_involving_reads_what_a_user_sent_and_received(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    a = await send(db, alice.id, bob.id, "a", at=NOW + 1)
    b = await send(db, bob.id, carol.id, "b", at=NOW + 2)
    c = await send(db, carol.id, alice.id, "c", at=NOW + 3)
    async with db.read() as conn:
        assert await store.list_involving(conn, bob.id, 0, 10) == [a, b]
        assert await store.list_involving(conn, bob.id, a.id, 10) == [b]
        assert await store.list_involving(conn, alice.id, 0, 1) == [a]
        assert await store.latest_involving(conn, [alice.id, bob.id, 999_999]) == [c.id, b.id, 0]
        assert await store.last_involving_id_before(conn, alice.id, NOW + 3) == a.id
        assert await store.last_involving_id_before(conn, alice.id, NOW + 4) == c.id
        assert await store.last_involving_id_before(conn, alice.id, NOW) == 0


async def test_insert_messages_loads_rows_as_given(db: Database) -> None:
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    lo, hi = sorted((alice.id, bob.id))
    async with db.transaction() as conn:
        first = await store.reserve_received(conn, bob.id, 2)
        assert first == 1
        rows = [(alice.id, bob.id, f"bulk {n}", NOW, first + n, lo, hi, n + 1) for n in range(2)]
        await store.insert_messages(conn, rows)
    async with db.read() as conn:
        count, ids = await store.inbox_page(conn, bob.id, 0, 10)
        assert count == 2
        assert [m.body for m in sorted(await store.get_messages(conn, ids))] == ["bulk 0", "bulk 1"]
        assert await store.conversation_count(conn, alice.id, bob.id) == 2


# ---------------------------------------------------------------- idempotency keys


async def test_idempotent_responses_are_stored_per_sender_and_key(db: Database) -> None:
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    response = StoredResponse("hash", 201, '{"id": 1}')
    async with db.transaction() as conn:
        await store.insert_idempotent_response(conn, alice.id, "k", response, NOW)
    async with db.read() as conn:
        assert await store.get_idempotent_response(conn, alice.id, "k") == response
        assert await store.get_idempotent_response(conn, bob.id, "k") is None
        assert await store.get_idempotent_response(conn, alice.id, "other") is None
    with pytest.raises(UniqueViolation):
        async with db.transaction() as conn:
            await store.insert_idempotent_response(conn, alice.id, "k", response, NOW)


async def test_old_idempotency_keys_are_deleted_by_age(db: Database) -> None:
    alice = await add_user(db, "alice")
    response = StoredResponse("hash", 201, "{}")
    async with db.transaction() as conn:
        await store.insert_idempotent_response(conn, alice.id, "old", response, NOW - 10)
        await store.insert_idempotent_response(conn, alice.id, "new", response, NOW)
        assert await store.delete_idempotency_keys_before(conn, NOW - 5) == 1
    async with db.read() as conn:
        assert await store.get_idempotent_response(conn, alice.id, "old") is None
        assert await store.get_idempotent_response(conn, alice.id, "new") == response


# ---------------------------------------------------------------- no commit inside


async def test_store_writes_are_undone_with_the_callers_transaction(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    """Store functions never commit: a transaction that raises takes every write back."""
    alice, bob, _ = three
    kept = await send(db, alice.id, bob.id, "kept")

    async def failing_action() -> None:
        async with db.transaction() as conn:
            await store.insert_user(conn, "G", "g@example.com", "h", ("g", "g@example.com"), NOW)
            await store.insert_token(conn, alice.id, "t", NOW)
            await store.mark_received(conn, bob.id, [kept.id], NOW)
            seq = await store.count_for_receive(conn, bob.id, also_sent=False)
            assert seq is not None
            await store.insert_message(conn, alice.id, bob.id, "ghost", NOW, seq)
            await store.delete_user(conn, alice.id)
            raise RuntimeError("the action failed")

    with pytest.raises(RuntimeError):
        await failing_action()
    async with db.read() as conn:
        assert await store.find_user_by_username(conn, "g") is None
        assert await store.find_token_user(conn, "t") is None
        assert await store.get_user(conn, alice.id) is not None
        assert await store.get_messages(conn, [kept.id]) == [kept]
        assert await store.inbox_page(conn, bob.id, 0, 10) == (1, [kept.id])
        assert await store.count_messages(conn, MessageFilter(bob.id, unread=True)) == 1
