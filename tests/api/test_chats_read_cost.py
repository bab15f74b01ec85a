"""GET /api/v1/chats/ and what a read costs: statements that do not grow with the page,
counts read by a seek, and the cache of received messages (kept correct across nodes)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatserver.config import Settings
from chatserver.migrations import upgrade
from chatserver.store import MessageRow
from chatserver.views import MessageCache
from tests.helpers import Api, User, count_statements, ids, running_app, send_many


@pytest.mark.bulk
@pytest.mark.parametrize(
    "filters", [{}, {"with": "partner"}, {"unread": "true"}], ids=["inbox", "with", "unread"]
)
async def test_reading_a_page_costs_the_same_statements_for_10_or_100(
    api: Api, filters: dict[str, str]
) -> None:
    alice, bob = await api.signup(), await api.signup()
    await send_many(api, bob, alice.id, 110)
    params = {k: bob.id if v == "partner" else v for k, v in filters.items()}
    await api.inbox(alice, page=10**6)  # authenticates alice once, so her token is cached
    counting = count_statements(api.client.app)

    small = await api.inbox(alice, page_size=10, **params)
    small_statements = list(counting.statements)
    counting.statements.clear()
    # This page holds unread messages too, so both reads do the same kinds of work.
    big = await api.inbox(alice, page_size=100, **params)
    big_statements = list(counting.statements)

    assert len(small["messages"]) == 10
    assert len(big["messages"]) == 100
    assert len(small_statements) == len(big_statements), (small_statements, big_statements)
    assert len(small_statements) <= 8, small_statements


async def test_a_conversation_count_is_one_seek_not_a_count(api: Api) -> None:
    """``?with=`` reads its count as the latest message's conversation number: no count over the
    conversation's messages, which grew with it (37 ms at 1,000,000 messages)."""
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    await send_many(api, bob, alice.id, 4)
    await send_many(api, alice, bob.id, 3)
    await send_many(api, carol, alice.id, 2)
    await send_many(api, alice, alice.id, 1)
    counting = count_statements(api.client.app)

    with_bob = await api.inbox(alice, **{"with": bob.id})
    with_carol = await api.inbox(bob, **{"with": carol.id})
    with_herself = await api.inbox(alice, **{"with": alice.id})

    assert [p["meta"]["count"] for p in (with_bob, with_carol, with_herself)] == [7, 0, 1]
    assert len(with_bob["messages"]) == 7
    assert not [sql for sql in counting.statements if "count(" in sql], counting.statements


async def test_a_first_page_that_is_not_full_is_its_own_count(api: Api) -> None:
    """A first page (every cursor read is one) with room left holds every match: its count
    is its length, with no count statement. A full page still asks the database."""
    alice, bob = await api.signup(), await api.signup()
    sent = [(await api.send(bob, alice.id, f"m{n}"))["id"] for n in range(3)]
    counting = count_statements(api.client.app)

    def counts_run() -> list[str]:  # the counts read sequence numbers; listing reads ids
        run = [sql for sql in counting.statements if "_seq" in sql]
        counting.statements.clear()
        return run

    synced = await api.inbox(alice, after_id=sent[0])
    assert (ids(synced), synced["meta"]["count"]) == (sent[1:], 2)
    assert counts_run() == []
    full_sync = await api.inbox(alice, after_id=sent[0], page_size=1)
    assert (ids(full_sync), full_sync["meta"]["count"]) == (sent[1:2], 2)
    assert counts_run() != []


async def test_a_conversation_page_reads_its_count_in_the_same_statement(api: Api) -> None:
    """``?with=`` pages (full, not full, deep) ask the conversation index once, for the ids
    and the count together; only a page past the end asks for the count on its own."""
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    sent = [(await api.send(bob, alice.id, f"b{n}"))["id"] for n in range(3)]
    sent += [(await api.send(alice, bob.id, f"a{n}"))["id"] for n in range(2)]
    counting = count_statements(api.client.app)

    async def read(other: User, **params: Any) -> tuple[list[int], int, int]:
        counting.statements.clear()
        page = await api.inbox(alice, **{"with": other.id}, **params)
        asked = [sql for sql in counting.statements if "peer_lo" in sql]
        return ids(page), page["meta"]["count"], len(asked)

    assert await read(bob) == (sent[::-1], 5, 1)
    assert await read(bob, page_size=2) == (sent[:2:-1], 5, 1)
    assert await read(bob, page_size=2, page=3) == ([sent[0]], 5, 1)
    assert await read(bob, page_size=2, page=4) == ([], 5, 2)
    assert await read(carol) == ([], 0, 1)


async def test_concurrent_sends_both_ways_are_all_counted_in_the_conversation(api: Api) -> None:
    """Each message takes the next number of its conversation under the users' row locks:
    sends racing each other in both directions never share a number."""
    alice, bob = await api.signup(), await api.signup()
    sends = [
        api.send(alice, bob.id, f"a{i}") if i % 2 else api.send(bob, alice.id, f"b{i}")
        for i in range(30)
    ]
    sent = await asyncio.gather(*sends)

    conversation = await api.inbox(alice, page_size=100, **{"with": bob.id})

    assert conversation["meta"]["count"] == 30
    assert sorted(m["id"] for m in conversation["messages"]) == sorted(m["id"] for m in sent)


@pytest.mark.parametrize(
    "filters",
    [{}, {"with": "partner"}, {"after_id": "0"}, {"before_id": "huge"}],
    ids=["inbox", "with", "after_id", "before_id"],
)
async def test_a_page_of_received_messages_reads_no_message_rows(
    api: Api, filters: dict[str, str]
) -> None:
    """A received message can no longer change, so the app keeps it: a page of them reads
    its ids from an index and no rows from the messages table (see views.MessageCache)."""
    alice, bob = await api.signup(), await api.signup()
    await send_many(api, bob, alice.id, 3)
    params = {k: {"partner": bob.id, "huge": 10**9}.get(v, v) for k, v in filters.items()}
    first = await api.inbox(alice, **params)  # marks all three received
    counting = count_statements(api.client.app)

    again = await api.inbox(alice, **params)

    assert len(first["messages"]) == 3
    assert all(m["received_at"] is not None for m in first["messages"])
    assert again == {**first, "meta": {**first["meta"], "took": again["meta"]["took"]}}
    assert not [sql for sql in counting.statements if "body" in sql], counting.statements


def test_the_message_cache_holds_received_messages_within_its_byte_budget() -> None:
    cache = MessageCache(max_bytes=2000)
    unread = MessageRow(1, 1, 2, "not yet", 0, None)
    cache.json(unread)
    assert cache.received([1]) == {1: None}  # unread: may change, so always read again

    rows = [MessageRow(n, 1, 2, "x" * 100, 0, 5) for n in range(2, 40)]
    views = [cache.json(row) for row in rows]

    assert cache.received([rows[-1].id]) == {rows[-1].id: rows[-1]}
    assert cache.json(rows[-1]) is views[-1]  # encoded once
    held = [row for row in cache.received([row.id for row in rows]).values() if row]
    assert rows[0] not in held  # ~200 bytes each: the first ones made room
    assert 0 < sum(len(cache.json(row)) for row in held) <= 2000


async def test_messages_received_through_another_node_read_as_received(
    settings: Settings,
) -> None:
    """Each node keeps the messages it served; one that holds a message still unread must
    still show it received once another node (sharing the database) marked it."""
    await asyncio.to_thread(upgrade, settings.database_url)
    async with running_app(settings) as node_a, running_app(settings) as node_b:
        alice, bob = await node_a.signup(), await node_a.signup()
        await node_a.send(bob, alice.id, "hello")
        unread = await node_a.inbox(bob, **{"with": alice.id})  # node A holds it, unread
        received = await node_b.inbox(alice)  # node B marks it received

        seen_on_a = await node_a.inbox(bob, **{"with": alice.id})

    assert unread["messages"][0]["received_at"] is None
    at = received["messages"][0]["received_at"]
    assert at is not None
    assert seen_on_a["messages"][0]["received_at"] == at
