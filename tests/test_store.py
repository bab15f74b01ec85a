"""chatserver.store on both engines: what each statement returns, ``None`` for not found,
that no store function commits (only the caller's transaction does), and how many
statements the conversation routes run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest
from httpx import Response
from litestar import Litestar

from chatserver import store
from chatserver.config import Settings
from chatserver.db import Conn, Database, UniqueViolation, open_database
from chatserver.events import MESSAGE, READ, RECEIVED
from chatserver.migrations import upgrade
from chatserver.store import (
    ConversationRow,
    EventRow,
    MessageFilter,
    MessageRow,
    NewEvent,
    Positions,
    StoredResponse,
    UserRow,
)
from tests.helpers import Api, User, concurrent_app, count_statements

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
    async with db.transaction() as conn:
        return await send_in(conn, sender, recipient, body, at)


async def send_in(conn: Conn, sender: int, recipient: int, body: str, at: int = NOW) -> MessageRow:
    """A send as ``actions`` runs it: count on both users' rows in ascending id order (taking
    each one's event position), insert (the row is both users' event), count in both
    conversations."""
    taken: dict[int, int] = {}
    seq = 0
    for user_id in sorted({sender, recipient}):
        if user_id == recipient:
            counted = await store.count_for_receive(conn, user_id, sender)
            assert counted is not None
            seq, taken[user_id] = counted.seq, counted.pos
        else:
            pos = await store.count_for_send(conn, user_id)
            assert pos is not None
            taken[user_id] = pos
    positions = Positions(taken[sender], taken[recipient])
    message = await store.insert_message(conn, sender, recipient, body, at, seq, positions)
    await store.count_in_conversations(conn, sender, recipient, message.id)
    return message


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


async def test_counters_report_whether_the_user_exists_and_take_positions(db: Database) -> None:
    alice = await add_user(db, "alice")
    async with db.transaction() as conn:
        assert await store.current_event_pos(conn, alice.id) == 0
        assert await store.count_for_send(conn, alice.id) == 1  # her first event position
        assert await store.count_for_send(conn, 999_999) is None
        # (recipient sequence number, event position, recipient blocks sender)
        assert await store.count_for_receive(conn, alice.id, 999_998) == (1, 2, False)
        assert await store.count_for_receive(conn, alice.id, alice.id) == (2, 3, False)
        assert await store.count_for_receive(conn, 999_999, alice.id) is None
        assert await store.reserve_received(conn, alice.id, 5, unread=True) == 3  # 3..7
        assert await store.reserve_received(conn, 999_999, 5, unread=True) is None
        assert await store.add_sent(conn, alice.id, 4) is True
        assert await store.add_sent(conn, 999_999, 4) is False
    async with db.read() as conn:
        user = await store.get_user(conn, alice.id)
        assert await store.current_event_pos(conn, alice.id) == 3
        # one unread, one to herself (never unread for her), five reserved unread
        assert await store.unread_total(conn, alice.id) == 6
    assert user is not None
    assert (user.received_count, user.unread_count) == (7, 7)


async def test_take_event_positions_takes_the_next_ones_densely(db: Database) -> None:
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    async with db.transaction() as conn:
        assert await store.take_event_positions(conn, alice.id) == 1
        assert await store.take_event_positions(conn, alice.id, 3) == 4  # 2, 3, 4
        assert await store.count_for_send(conn, alice.id) == 5  # the same counter
        assert await store.take_event_positions(conn, bob.id) == 1  # per user
        assert await store.take_event_positions(conn, 999_999) is None
    async with db.read() as conn:
        assert await store.current_event_pos(conn, alice.id) == 5
        assert await store.current_event_pos(conn, bob.id) == 1
        assert await store.current_event_pos(conn, 999_999) == 0


async def test_positions_taken_in_a_failed_transaction_are_taken_again(db: Database) -> None:
    alice = await add_user(db, "alice")

    async def failing() -> None:
        async with db.transaction() as conn:
            assert await store.take_event_positions(conn, alice.id, 2) == 2
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await failing()
    async with db.transaction() as conn:
        assert await store.take_event_positions(conn, alice.id) == 1


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


async def test_delete_user_keeps_peers_conversations_at_the_latest_message_left(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    """Alice's conversation with bob now ends at the last message bob sent her (those he
    received are gone); carol only wrote to bob, so hers goes; bob's rows and events go."""
    alice, bob, carol = three
    from_bob = await send(db, bob.id, alice.id, "from bob")
    await send(db, alice.id, bob.id, "to bob")  # the latest of theirs, deleted with bob
    await send(db, carol.id, bob.id, "carol to bob")
    to_carol = await send(db, alice.id, carol.id, "alice to carol")
    await send(db, bob.id, bob.id, "bob to himself")
    async with db.transaction() as conn:
        assert await store.delete_user(conn, bob.id) is True
    async with db.read() as conn:
        with_bob = await store.get_conversation(conn, alice.id, bob.id)
        assert with_bob is not None
        assert with_bob.last_message_id == from_bob.id
        assert with_bob.peer_last_read_id == 0  # bob's row is gone
        assert await store.get_conversation(conn, carol.id, bob.id) is None
        kept = await store.get_conversation(conn, carol.id, alice.id)
        assert kept is not None
        assert kept.last_message_id == to_carol.id  # untouched
        assert await store.list_conversations(conn, bob.id, None, 10) == []
        assert await store.get_conversation(conn, bob.id, alice.id) is None
        # bob's stored events go (the messages he sent stay: they are their recipients')
        sql = "SELECT count(*) FROM events WHERE user_id = $1"
        assert await conn.fetch_val(sql, bob.id) == 0
        assert [c.peer_id for c in await store.list_conversations(conn, alice.id, None, 10)] == [
            carol.id,
            bob.id,
        ]
        # alice keeps her events; the message bob received is gone, and its position with it
        events = await store.list_events(conn, alice.id, 0, 100)
        assert [(e.pos, e.message.id if e.message else None) for e in events] == [
            (1, from_bob.id),
            (3, to_carol.id),
        ]


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
        marked = await store.mark_received(conn, bob.id, m[:2], NOW + 1)
        await store.note_fetch(conn, bob.id, len(marked), NOW + 1)
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
        await store.note_fetch(conn, bob.id, len(marked), NOW + 2)  # the counter: the caller's
    async with db.read() as conn:
        rows = {m.id: m for m in await store.get_messages(conn, [first.id, second.id])}
        user = await store.get_user(conn, bob.id)
    assert rows[first.id].received_at == NOW + 1
    assert rows[second.id].received_at is None
    assert user is not None
    assert (user.unread_count, user.last_seen_at) == (1, NOW + 2)


async def test_insert_message_stores_its_positions_and_its_number_from_the_sender(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    a1 = await send(db, alice.id, bob.id, "a1")
    c1 = await send(db, carol.id, bob.id, "c1")
    b1 = await send(db, bob.id, alice.id, "b1")
    a2 = await send(db, alice.id, bob.id, "a2")
    async with db.transaction() as conn:
        counted = await store.count_for_receive(conn, bob.id, alice.id)
        assert counted is not None
        given = await store.insert_message(
            conn, alice.id, bob.id, "a3", NOW, counted.seq, Positions(70, 90)
        )
        rows = await conn.fetch_all(
            "SELECT id, pair_seq, sender_pos, recipient_pos FROM messages ORDER BY id"
        )
    assert [tuple(row) for row in rows] == [
        (a1.id, 1, 1, 1),  # alice's and bob's first events
        (c1.id, 1, 1, 2),
        (b1.id, 1, 3, 2),  # bob's third event, alice's second
        (a2.id, 2, 3, 4),  # the second from alice to bob
        (given.id, 3, 70, 90),  # as given
    ]


async def test_count_in_conversations_keeps_two_rows_or_one_for_yourself(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, _ = three
    first = await send(db, alice.id, bob.id, "a")
    async with db.read() as conn:
        assert await store.get_conversation(conn, alice.id, bob.id) == ConversationRow(
            alice.id, bob.id, first.id, 0, 0, 0, 0
        )
        assert await store.get_conversation(conn, bob.id, alice.id) == ConversationRow(
            bob.id, alice.id, first.id, 1, 1, 0, 0
        )
    back = await send(db, bob.id, alice.id, "b")
    again = await send(db, alice.id, bob.id, "c")
    to_self = await send(db, alice.id, alice.id, "note")
    async with db.read() as conn:
        assert await store.get_conversation(conn, alice.id, bob.id) == ConversationRow(
            alice.id, bob.id, again.id, 1, 1, 0, 0
        )
        assert await store.get_conversation(conn, bob.id, alice.id) == ConversationRow(
            bob.id, alice.id, again.id, 2, 2, 0, 0
        )
        # One row with yourself: received, never unread.
        assert await store.get_conversation(conn, alice.id, alice.id) == ConversationRow(
            alice.id, alice.id, to_self.id, 1, 0, 0, 0
        )
        assert await store.unread_total(conn, alice.id) == 1
        assert await store.unread_total(conn, bob.id) == 2
        assert back.id < again.id


async def test_get_conversation_is_none_without_messages(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    await send(db, alice.id, bob.id, "a")
    async with db.read() as conn:
        assert await store.get_conversation(conn, alice.id, carol.id) is None
        assert await store.get_conversation(conn, 999_999, alice.id) is None
        assert await store.list_conversations(conn, carol.id, None, 10) == []


async def test_list_conversations_pages_by_latest_message_with_the_peers_read_mark(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    dave = await add_user(db, "dave")
    await send(db, alice.id, bob.id, "to bob")
    to_carol = await send(db, alice.id, carol.id, "to carol")
    from_dave = await send(db, dave.id, alice.id, "from dave")
    from_bob = await send(db, bob.id, alice.id, "from bob")  # bob's is the latest again
    async with db.transaction() as conn:
        assert await store.set_read_mark(conn, carol.id, alice.id, to_carol.id, 0)
        assert await store.set_read_mark(conn, alice.id, bob.id, from_bob.id, 0)
    async with db.read() as conn:
        first = await store.list_conversations(conn, alice.id, None, 2)
        second = await store.list_conversations(conn, alice.id, first[-1].last_message_id, 2)
        everything = await store.list_conversations(conn, alice.id, None, 10)
        assert await store.list_conversations(conn, alice.id, to_carol.id, 10) == []
    assert [(c.peer_id, c.last_message_id) for c in first] == [
        (bob.id, from_bob.id),
        (dave.id, from_dave.id),
    ]
    assert [(c.peer_id, c.last_message_id) for c in second] == [(carol.id, to_carol.id)]
    assert everything == first + second
    read_marks = {c.peer_id: (c.last_read_id, c.peer_last_read_id) for c in everything}
    assert read_marks == {
        bob.id: (from_bob.id, 0),  # alice read bob's; bob has not read hers
        dave.id: (0, 0),
        carol.id: (0, to_carol.id),  # carol read alice's, from carol's own row
    }


async def test_received_up_to_counts_one_senders_messages_up_to_an_id(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    a1 = await send(db, alice.id, bob.id, "a1")
    a2 = await send(db, alice.id, bob.id, "a2")
    c1 = await send(db, carol.id, bob.id, "c1")
    back = await send(db, bob.id, alice.id, "back")
    a3 = await send(db, alice.id, bob.id, "a3")
    async with db.read() as conn:
        assert await store.received_up_to(conn, bob.id, alice.id, 0) == 0
        assert await store.received_up_to(conn, bob.id, alice.id, a1.id) == 1
        assert await store.received_up_to(conn, bob.id, alice.id, a2.id) == 2
        assert await store.received_up_to(conn, bob.id, alice.id, c1.id) == 2
        assert await store.received_up_to(conn, bob.id, alice.id, back.id) == 2
        assert await store.received_up_to(conn, bob.id, alice.id, a3.id + 10) == 3
        assert await store.received_up_to(conn, bob.id, carol.id, a3.id) == 1
        assert await store.received_up_to(conn, alice.id, bob.id, a3.id) == 1
        assert await store.received_up_to(conn, carol.id, bob.id, a3.id) == 0


async def test_received_up_to_counts_right_after_the_peers_account_is_deleted(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    """The count comes from the conversation's latest message up to the id (its number in
    the conversation and in its direction); deleting bob removes what alice sent him and
    numbers his messages to her again, so the counts stay right."""
    alice, bob, _ = three
    b1 = await send(db, bob.id, alice.id, "b1")
    a1 = await send(db, alice.id, bob.id, "a1")
    b2 = await send(db, bob.id, alice.id, "b2")
    a2 = await send(db, alice.id, bob.id, "a2")
    async with db.read() as conn:
        assert await store.received_up_to(conn, alice.id, bob.id, a1.id) == 1
        assert await store.received_up_to(conn, alice.id, bob.id, a2.id) == 2
    async with db.transaction() as conn:
        assert await store.delete_user(conn, bob.id) is True
    async with db.read() as conn:
        assert await store.received_up_to(conn, alice.id, bob.id, b1.id) == 1
        assert await store.received_up_to(conn, alice.id, bob.id, a1.id) == 1
        assert await store.received_up_to(conn, alice.id, bob.id, b2.id) == 2
        assert await store.received_up_to(conn, alice.id, bob.id, a2.id + 10) == 2


async def test_a_read_mark_only_moves_forward(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    m = [await send(db, alice.id, bob.id, f"m{n}") for n in range(3)]
    async with db.transaction() as conn:
        assert await store.set_read_mark(conn, bob.id, alice.id, m[1].id, 1) is True
        assert await store.set_read_mark(conn, bob.id, alice.id, m[0].id, 2) is False  # back
        assert await store.set_read_mark(conn, bob.id, alice.id, m[1].id, 2) is False  # same
        assert await store.set_read_mark(conn, bob.id, carol.id, m[2].id, 0) is False  # none
    async with db.read() as conn:
        row = await store.get_conversation(conn, bob.id, alice.id)
        peer = await store.get_conversation(conn, alice.id, bob.id)
    assert row is not None
    assert (row.last_read_id, row.unread_count, row.received_count) == (m[1].id, 1, 3)
    assert peer is not None
    assert (peer.last_read_id, peer.peer_last_read_id) == (0, m[1].id)


async def test_add_to_unread_total_changes_the_users_total(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, _ = three
    for n in range(3):
        await send(db, alice.id, bob.id, f"m{n}")
    async with db.transaction() as conn:
        assert await store.unread_total(conn, bob.id) == 3
        await store.add_to_unread_total(conn, bob.id, -2)
        await store.add_to_unread_total(conn, 999_999, -2)  # no such user: nothing
    async with db.read() as conn:
        assert await store.unread_total(conn, bob.id) == 1
        assert await store.unread_total(conn, alice.id) == 0
        assert await store.unread_total(conn, 999_999) == 0


async def test_list_events_reads_after_a_position_with_messages_as_they_are_now(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    first = await send(db, alice.id, bob.id, "one", at=NOW + 1)
    second = await send(db, carol.id, bob.id, "two", at=NOW + 2)
    async with db.transaction() as conn:
        assert await store.mark_received(conn, bob.id, [first.id], NOW + 3) != []
        alice_pos = await store.take_event_positions(conn, alice.id)
        bob_pos = await store.take_event_positions(conn, bob.id)
        assert (alice_pos, bob_pos) == (2, 3)
        await store.insert_events(
            conn,
            [
                NewEvent(alice.id, 2, RECEIVED, NOW + 3, by_id=bob.id, message_ids=f"[{first.id}]"),
                NewEvent(bob.id, 3, READ, NOW + 4, by_id=bob.id, of_id=alice.id, up_to_id=first.id),
            ],
        )
    async with db.read() as conn:
        for_bob = await store.list_events(conn, bob.id, 0, 10)
        for_alice = await store.list_events(conn, alice.id, 0, 10)
        assert await store.list_events(conn, bob.id, 1, 1) == for_bob[1:2]
        assert await store.list_events(conn, bob.id, 3, 10) == []
        assert await store.list_events(conn, 999_999, 0, 10) == []
    received = first._replace(received_at=NOW + 3)  # its current state, not as sent
    assert for_bob == [
        EventRow(1, MESSAGE, None, None, None, None, NOW + 1, received),
        EventRow(2, MESSAGE, None, None, None, None, NOW + 2, second),
        EventRow(3, READ, bob.id, alice.id, first.id, None, NOW + 4, None),
    ]
    assert for_alice == [
        EventRow(1, MESSAGE, None, None, None, None, NOW + 1, received),
        EventRow(2, RECEIVED, bob.id, None, None, f"[{first.id}]", NOW + 3, None),
    ]


async def test_a_position_is_taken_once_per_user(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, _ = three
    read = NewEvent(alice.id, 1, READ, NOW, by_id=bob.id, of_id=alice.id, up_to_id=1)
    async with db.transaction() as conn:
        await store.insert_events(conn, [read])
    with pytest.raises(UniqueViolation):
        async with db.transaction() as conn:
            await store.insert_events(conn, [read._replace(kind=RECEIVED)])


async def test_event_pos_after_message_is_that_of_the_latest_message_up_to_an_id(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    alice, bob, carol = three
    to_bob = await send(db, alice.id, bob.id, "a")  # alice 1, bob 1
    elsewhere = await send(db, bob.id, carol.id, "b")  # bob 2, carol 1
    from_carol = await send(db, carol.id, alice.id, "c")  # carol 2, alice 2
    async with db.transaction() as conn:
        await store.take_event_positions(conn, alice.id, 5)  # alice 3..7: not messages
    last = await send(db, alice.id, bob.id, "d")  # alice 8, bob 3
    async with db.read() as conn:
        assert await store.event_pos_after_message(conn, alice.id, 0) == 0
        assert await store.event_pos_after_message(conn, alice.id, to_bob.id) == 1
        assert await store.event_pos_after_message(conn, alice.id, elsewhere.id) == 1
        assert await store.event_pos_after_message(conn, alice.id, from_carol.id) == 2
        assert await store.event_pos_after_message(conn, alice.id, last.id - 1) == 2
        assert await store.event_pos_after_message(conn, alice.id, last.id) == 8
        assert await store.event_pos_after_message(conn, bob.id, from_carol.id) == 2
        assert await store.event_pos_after_message(conn, bob.id, last.id + 100) == 3
        assert await store.event_pos_after_message(conn, 999_999, last.id) == 0


async def test_old_events_are_deleted_by_age_leaving_messages_and_a_mark(
    db: Database, three: tuple[UserRow, UserRow, UserRow]
) -> None:
    """Stored events older than the cutoff go, oldest first, and each user's mark moves to
    the latest position gone; a message is its own event and stays."""
    alice, bob, _ = three
    old = await send(db, alice.id, bob.id, "old", at=NOW - 10)  # alice 1, bob 1
    received = NewEvent(alice.id, 2, RECEIVED, NOW - 9, by_id=bob.id, message_ids=f"[{old.id}]")
    read = NewEvent(bob.id, 2, READ, NOW - 8, by_id=bob.id, of_id=alice.id, up_to_id=old.id)
    async with db.transaction() as conn:
        for user_id in (alice.id, bob.id, bob.id):
            await store.take_event_positions(conn, user_id)
        await store.insert_events(conn, [received, read, read._replace(pos=3, at=NOW)])
        assert await store.events_gone_up_to(conn, alice.id) == 0
        assert await store.delete_oldest_events(conn, NOW - 5, limit=1) == 1
        assert await store.events_gone_up_to(conn, alice.id) == 2
        assert await store.events_gone_up_to(conn, bob.id) == 0
        assert await store.delete_oldest_events(conn, NOW - 5, limit=10) == 1
        assert await store.delete_oldest_events(conn, NOW - 5, limit=10) == 0
    async with db.read() as conn:
        assert [(e.pos, e.kind) for e in await store.list_events(conn, alice.id, 0, 10)] == [
            (1, MESSAGE)
        ]
        assert [(e.pos, e.kind) for e in await store.list_events(conn, bob.id, 0, 10)] == [
            (1, MESSAGE),
            (3, READ),
        ]
        assert await store.events_gone_up_to(conn, alice.id) == 2
        assert await store.events_gone_up_to(conn, bob.id) == 2
        assert await store.current_event_pos(conn, alice.id) == 2  # positions are not reused


async def test_bulk_loading_keeps_numbers_positions_events_and_conversations(
    db: Database,
) -> None:
    """``chatserver bulk-load``'s statements: the rows as given, both users' message events,
    and both conversation rows, as sends keep them."""
    alice, bob = await add_user(db, "alice"), await add_user(db, "bob")
    lo, hi = sorted((alice.id, bob.id))
    async with db.transaction() as conn:
        first = await store.reserve_received(conn, bob.id, 2, unread=True)
        assert first == 1
        assert await store.add_sent(conn, alice.id, 2) is True
        assert await store.take_event_positions(conn, alice.id, 2) == 2
        assert await store.take_event_positions(conn, bob.id, 2) == 2
        rows = [
            store.BulkMessage(
                alice.id, bob.id, f"bulk {n}", NOW, first + n, lo, hi, n + 1, n + 1, n + 1, n + 1
            )
            for n in range(2)
        ]
        await store.insert_messages(conn, rows)
        last_id = await store.latest_loaded_id(conn, bob.id, first)
        await store.count_many_in_conversations(conn, alice.id, bob.id, last_id, 2)
    async with db.read() as conn:
        count, ids = await store.inbox_page(conn, bob.id, 0, 10)
        assert count == 2
        assert last_id == max(ids)
        assert [m.body for m in sorted(await store.get_messages(conn, ids))] == ["bulk 0", "bulk 1"]
        assert await store.conversation_count(conn, alice.id, bob.id) == 2
        assert await store.received_up_to(conn, bob.id, alice.id, last_id) == 2
        for user_id in (alice.id, bob.id):
            events = await store.list_events(conn, user_id, 0, 10)
            assert [(e.pos, e.kind, e.message and e.message.body) for e in events] == [
                (1, MESSAGE, "bulk 0"),
                (2, MESSAGE, "bulk 1"),
            ]
        assert await store.get_conversation(conn, bob.id, alice.id) == ConversationRow(
            bob.id, alice.id, last_id, 2, 2, 0, 0
        )
        assert await store.get_conversation(conn, alice.id, bob.id) == ConversationRow(
            alice.id, bob.id, last_id, 0, 0, 0, 0
        )
        assert await store.unread_total(conn, bob.id) == 2


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
            await send_in(conn, alice.id, bob.id, "ghost")
            assert await store.take_event_positions(conn, bob.id) is not None
            await store.set_read_mark(conn, bob.id, alice.id, kept.id, 0)
            await store.add_to_unread_total(conn, bob.id, -1)
            await store.delete_oldest_events(conn, NOW + 1, limit=100)
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
        assert await store.current_event_pos(conn, bob.id) == 1
        assert [e.message for e in await store.list_events(conn, bob.id, 0, 10)] == [kept]
        assert await store.get_conversation(conn, bob.id, alice.id) == ConversationRow(
            bob.id, alice.id, kept.id, 1, 1, 0, 0
        )
        assert await store.unread_total(conn, bob.id) == 1


# ---------------------------------------------------------------- statements per request
#
# Conversation routes through the running app (its database behind a counting proxy): a
# page, one conversation and a read mark each cost a few statements, however many
# conversations and messages exist.


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[tuple[Litestar, Api]]:
    """The app and an API client in this test's event loop, so the test can write through
    the app's own database."""
    async with concurrent_app(settings) as (litestar_app, client):
        yield litestar_app, Api(client)  # type: ignore[arg-type]


async def viewer_with(app: tuple[Litestar, Api], conversations: int, messages: int) -> User:
    """A user with ``conversations`` peers, each of whom sent them ``messages`` messages
    (written straight through the app's database: sign-ups hash passwords slowly)."""
    litestar_app, api = app
    viewer = await api.signup()
    db = litestar_app.state.services.db
    for n in range(conversations):
        peer = await add_user(db, f"{viewer.username}peer{n}")
        for _ in range(messages):
            await send(db, peer.id, viewer.id, "hi")
    r = await api.get("/api/v1/conversations/", viewer)  # caches the viewer's token
    assert r.status_code == 200, r.text
    return viewer


async def statements_of(app: tuple[Litestar, Api], request: Awaitable[Response]) -> list[str]:
    litestar_app, _ = app
    counting = count_statements(litestar_app)
    try:
        response = await request
        assert response.status_code == 200, response.text
    finally:
        litestar_app.state.services.db = counting._inner
    return counting.statements


async def test_a_conversations_page_costs_the_same_statements_for_3_or_30(
    app: tuple[Litestar, Api],
) -> None:
    _, api = app
    few, many = await viewer_with(app, 3, 2), await viewer_with(app, 30, 2)
    runs = []
    for viewer, count in ((few, 3), (many, 30)):
        get = api.get("/api/v1/conversations/", viewer, page_size=100)
        runs.append(await statements_of(app, get))
        page = (await api.get("/api/v1/conversations/", viewer, page_size=100)).json()
        assert len(page["conversations"]) == count
        assert page["unread_total"] == 2 * count
    assert len(runs[0]) == len(runs[1]), runs
    # the page, the total, its users, which of them block the caller, its messages
    assert len(runs[0]) <= 5, runs[0]


async def test_reading_one_conversation_costs_the_same_statements_for_3_or_30_messages(
    app: tuple[Litestar, Api],
) -> None:
    _, api = app
    runs = []
    for count in (3, 30):
        viewer = await viewer_with(app, count, count)
        listed = (await api.get("/api/v1/conversations/", viewer)).json()["conversations"][0]
        path = f"/api/v1/conversations/{listed['user_id']}/"
        runs.append(await statements_of(app, api.get(path, viewer)))
        assert (await api.get(path, viewer)).json()["unread_count"] == count
    assert len(runs[0]) == len(runs[1]), runs
    # the row (with the peer's mark), the user, whether they block the caller, the message
    assert len(runs[0]) <= 4, runs[0]


async def test_marking_read_costs_the_same_statements_for_3_or_30_messages(
    app: tuple[Litestar, Api],
) -> None:
    _, api = app
    runs = []
    for count in (3, 30):
        viewer = await viewer_with(app, count, count)
        listed = (await api.get("/api/v1/conversations/", viewer)).json()["conversations"][0]
        path = f"/api/v1/conversations/{listed['user_id']}/read"
        # Up to the message before the latest: one stays unread, counted by one seek.
        body = {"up_to_id": listed["last_message"]["id"] - 1}
        post = api.client.post(path, json=body, headers=viewer.auth)
        runs.append(await statements_of(app, post))
        marked = (await api.get(path.removesuffix("read"), viewer)).json()
        assert (marked["unread_count"], marked["last_read_id"]) == (1, body["up_to_id"])
    assert len(runs[0]) == len(runs[1]), runs
    # The row before and after locking both users, their positions, the seek, the mark,
    # the total, the events, its user, whether they block the reader, and its message.
    assert len(runs[0]) <= 11, runs[0]
    assert not [sql for sql in runs[1] if "count(" in sql], runs[1]
