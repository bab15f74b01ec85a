"""GET /api/v1/chats/: the page's shape, paging, filters, cursors, what a read marks
received, and id order while senders race (its costs: test_chats_read_cost.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.helpers import (
    MESSAGE_FIELDS,
    Api,
    User,
    assert_problem,
    assert_utc_timestamp,
    ids,
    send_many,
)

CHATS = "/api/v1/chats/"
META_FIELDS = {"count", "next", "current_page", "took", "previous"}


# ---------------------------------------------------------------- reading: shape and paging


async def test_inbox_has_the_documented_shape(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(bob, alice.id, "hai 12")
    page = await api.inbox(alice)
    assert set(page) == {"meta", "messages"}
    assert set(page["meta"]) == META_FIELDS
    meta = page["meta"]
    assert meta["count"] == 1
    assert meta["current_page"] == "1"
    assert meta["next"] is None
    assert meta["previous"] is None
    assert isinstance(meta["took"], int)
    assert meta["took"] >= 0
    (message,) = page["messages"]
    assert set(message) >= MESSAGE_FIELDS
    assert (message["sent_by"], message["received_by"], message["message"]) == (
        bob.id,
        alice.id,
        "hai 12",
    )
    assert_utc_timestamp(message["sent_at"])


async def test_empty_inbox(api: Api) -> None:
    alice = await api.signup()
    page = await api.inbox(alice)
    assert page["messages"] == []
    assert page["meta"]["count"] == 0
    assert (page["meta"]["next"], page["meta"]["previous"]) == (None, None)


async def test_inbox_pages_newest_first_with_default_page_size_10(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = [(await api.send(bob, alice.id, f"hai {n}"))["id"] for n in range(13)]
    newest_first = list(reversed(sent))

    first = await api.inbox(alice)
    assert ids(first) == newest_first[:10]
    assert first["meta"] | {"took": 0} == {
        "count": 13,
        "next": 2,
        "current_page": "1",
        "took": 0,
        "previous": None,
    }
    second = await api.inbox(alice, page=2)
    assert ids(second) == newest_first[10:]
    assert (second["meta"]["count"], second["meta"]["current_page"]) == (13, "2")
    assert (second["meta"]["next"], second["meta"]["previous"]) == (None, 1)


async def test_page_size_pages(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = list(reversed([(await api.send(bob, alice.id, f"m{n}"))["id"] for n in range(7)]))
    pages = [await api.inbox(alice, page=n, page_size=3) for n in (1, 2, 3)]
    assert [ids(p) for p in pages] == [sent[0:3], sent[3:6], sent[6:7]]
    assert [(p["meta"]["previous"], p["meta"]["next"]) for p in pages] == [
        (None, 2),
        (1, 3),
        (2, None),
    ]
    assert [p["meta"]["current_page"] for p in pages] == ["1", "2", "3"]
    assert all(p["meta"]["count"] == 7 for p in pages)


@pytest.mark.bulk
async def test_page_size_100_is_allowed(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = await send_many(api, bob, alice.id, 105)
    page = await api.inbox(alice, page_size=100)
    assert ids(page) == sorted(sent, reverse=True)[:100]
    assert (page["meta"]["count"], page["meta"]["next"]) == (105, 2)


async def test_page_past_the_end_is_200_and_empty(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(bob, alice.id)
    for page_number in (2, 3, 10**6):
        page = await api.inbox(alice, page=page_number)
        assert page["messages"] == [], page_number
        assert page["meta"]["count"] == 1
        assert page["meta"]["next"] is None
        assert page["meta"]["current_page"] == str(page_number)


async def test_out_of_range_paging_is_400(api: Api) -> None:
    alice = await api.signup()
    for params, field in [
        ({"page_size": 101}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": -3}, "page"),
    ]:
        r = await api.client.get(CHATS, params=params, headers=alice.auth)
        assert_problem(r, 400, field)


async def test_reading_needs_authentication(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    r = await client.get(CHATS)
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"]


# ---------------------------------------------------------------- filters


async def test_with_returns_the_conversation_in_both_directions(api: Api) -> None:
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    a1 = await api.send(alice, bob.id, "a→b")
    await api.send(carol, alice.id, "c→a")
    b1 = await api.send(bob, alice.id, "b→a")
    await api.send(bob, carol.id, "b→c")
    a2 = await api.send(alice, bob.id, "a→b again")
    conversation = [a2["id"], b1["id"], a1["id"]]

    for reader, partner in ((alice, bob), (bob, alice)):
        page = await api.inbox(reader, **{"with": partner.id})
        assert ids(page) == conversation
        assert page["meta"]["count"] == 3


async def test_with_pages(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = []
    for n in range(5):
        sender, to = (alice, bob) if n % 2 else (bob, alice)
        sent.append((await api.send(sender, to.id, f"m{n}"))["id"])
    newest_first = list(reversed(sent))
    first = await api.inbox(alice, **{"with": bob.id, "page_size": 2})
    last = await api.inbox(alice, **{"with": bob.id, "page_size": 2, "page": 3})
    assert ids(first) == newest_first[:2]
    assert ids(last) == newest_first[4:]
    assert (first["meta"]["count"], first["meta"]["next"], first["meta"]["previous"]) == (
        5,
        2,
        None,
    )
    assert (last["meta"]["next"], last["meta"]["previous"]) == (None, 2)


async def test_with_yourself_is_your_notes_to_self(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    note = await api.send(alice, alice.id, "note")
    await api.send(bob, alice.id, "from bob")
    page = await api.inbox(alice, **{"with": alice.id})
    assert ids(page) == [note["id"]]


async def test_with_someone_you_never_talked_to_is_empty(api: Api) -> None:
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    await api.send(bob, alice.id)
    page = await api.inbox(alice, **{"with": carol.id})
    assert page["messages"] == []
    assert page["meta"]["count"] == 0


async def test_unread_returns_only_messages_never_fetched(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    oldest, middle, newest = [(await api.send(bob, alice.id, f"m{n}"))["id"] for n in range(3)]
    assert ids(await api.inbox(alice, page_size=2)) == [newest, middle]

    unread = await api.inbox(alice, unread="true")
    assert ids(unread) == [oldest]
    assert unread["meta"]["count"] == 1
    later = await api.send(bob, alice.id, "later")
    again = await api.inbox(alice, unread="true")
    assert ids(again) == [later["id"]]
    assert again["meta"]["count"] == 1


async def test_unread_false_is_the_whole_inbox(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = [(await api.send(bob, alice.id, f"m{n}"))["id"] for n in range(2)]
    await api.inbox(alice)
    page = await api.inbox(alice, unread="false")
    assert ids(page) == list(reversed(sent))


async def test_unread_combines_with_with_and_paging(api: Api) -> None:
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    from_bob = [(await api.send(bob, alice.id, f"b{n}"))["id"] for n in range(3)]
    await api.send(carol, alice.id, "c")
    await api.send(alice, bob.id, "mine: never unread for me")
    page = await api.inbox(alice, unread="true", page_size=2, **{"with": bob.id})
    assert ids(page) == [from_bob[2], from_bob[1]]
    assert (page["meta"]["count"], page["meta"]["next"]) == (3, 2)


async def test_later_pages_of_unread_and_of_a_conversation_count_every_match(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = [(await api.send(bob, alice.id, f"m{n}"))["id"] for n in range(3)]
    second = await api.inbox(alice, page=2, page_size=2, **{"with": bob.id})
    assert ids(second) == [sent[0]]
    assert (second["meta"]["count"], second["meta"]["previous"]) == (3, 1)
    past_the_end = await api.inbox(alice, page=3, page_size=2, **{"with": bob.id})
    assert (ids(past_the_end), past_the_end["meta"]["count"]) == ([], 3)

    carol = await api.signup()
    unread = [(await api.send(bob, carol.id, f"u{n}"))["id"] for n in range(3)]
    second = await api.inbox(carol, page=2, page_size=2, unread="true")
    assert (ids(second), second["meta"]["count"]) == ([unread[0]], 3)
    # That fetch marked unread[0] received: two are left, both on page 1.
    past_the_end = await api.inbox(carol, page=2, page_size=2, unread="true")
    assert (ids(past_the_end), past_the_end["meta"]["count"]) == ([], 2)


# ---------------------------------------------------------------- cursors


async def five_messages(api: Api) -> tuple[User, User, list[int]]:
    alice, bob = await api.signup(), await api.signup()
    sent = [(await api.send(bob, alice.id, f"m{n}"))["id"] for n in range(5)]
    return alice, bob, sent


def assert_cursor_meta(page: dict[str, Any], count: int) -> None:
    assert page["meta"]["count"] == count
    assert page["meta"]["next"] is None
    assert page["meta"]["previous"] is None


async def test_before_id_returns_older_messages_newest_first(api: Api) -> None:
    alice, _, sent = await five_messages(api)
    page = await api.inbox(alice, before_id=sent[3])
    assert ids(page) == [sent[2], sent[1], sent[0]]
    assert_cursor_meta(page, 3)
    limited = await api.inbox(alice, before_id=sent[3], page_size=2)
    assert ids(limited) == [sent[2], sent[1]]
    assert_cursor_meta(limited, 3)


async def test_after_id_returns_newer_messages_oldest_first(api: Api) -> None:
    alice, _, sent = await five_messages(api)
    page = await api.inbox(alice, after_id=sent[1])
    assert ids(page) == [sent[2], sent[3], sent[4]]
    assert_cursor_meta(page, 3)
    limited = await api.inbox(alice, after_id=sent[1], page_size=2)
    assert ids(limited) == [sent[2], sent[3]]
    assert_cursor_meta(limited, 3)


async def test_after_id_zero_is_everything_oldest_first(api: Api) -> None:
    alice, _, sent = await five_messages(api)
    page = await api.inbox(alice, after_id=0)
    assert ids(page) == sent
    assert_cursor_meta(page, 5)


async def test_cursors_at_the_ends_are_empty(api: Api) -> None:
    alice, _, sent = await five_messages(api)
    after_last = await api.inbox(alice, after_id=sent[-1])
    before_first = await api.inbox(alice, before_id=sent[0])
    for page in (after_last, before_first):
        assert page["messages"] == []
        assert_cursor_meta(page, 0)


async def test_cursor_between_ids_of_other_users_messages(api: Api) -> None:
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    first = await api.send(bob, alice.id, "1")
    other = await api.send(bob, carol.id, "not alice's")
    last = await api.send(bob, alice.id, "2")
    assert ids(await api.inbox(alice, after_id=other["id"])) == [last["id"]]
    assert ids(await api.inbox(alice, before_id=other["id"])) == [first["id"]]
    assert (await api.inbox(alice, after_id=other["id"]))["meta"]["count"] == 1


async def test_before_and_after_id_together_select_a_window(api: Api) -> None:
    alice, _, sent = await five_messages(api)
    page = await api.inbox(alice, after_id=sent[0], before_id=sent[4])
    assert sorted(ids(page)) == sent[1:4]
    assert_cursor_meta(page, 3)


async def test_after_id_combines_with_with(api: Api) -> None:
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    start = await api.send(bob, alice.id, "start")
    mine = await api.send(alice, bob.id, "mine")
    await api.send(carol, alice.id, "carol")
    theirs = await api.send(bob, alice.id, "theirs")
    page = await api.inbox(alice, after_id=start["id"], **{"with": bob.id})
    assert ids(page) == [mine["id"], theirs["id"]]
    assert_cursor_meta(page, 2)


async def test_after_id_combines_with_unread(api: Api) -> None:
    alice, _, sent = await five_messages(api)
    await api.inbox(alice, page_size=1)  # fetches sent[4]
    page = await api.inbox(alice, after_id=sent[1], unread="true")
    assert ids(page) == [sent[2], sent[3]]
    assert_cursor_meta(page, 2)


async def test_paging_forward_with_after_id_sees_every_message_once(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = await send_many(api, bob, alice.id, 23)
    seen: list[int] = []
    last = 0
    while page := ids(await api.inbox(alice, after_id=last, page_size=5)):
        seen.extend(page)
        last = page[-1]
    assert seen == sorted(sent)


# ---------------------------------------------------------------- delivery side effects


async def test_received_at_is_null_until_the_recipient_fetches(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = await api.send(alice, bob.id, "did you get it?")

    (seen_by_sender,) = (await api.inbox(alice, **{"with": bob.id}))["messages"]
    assert seen_by_sender["received_at"] is None

    before = datetime.now(UTC) - timedelta(seconds=5)
    await api.inbox(bob)
    (fetched,) = (await api.inbox(bob))["messages"]
    received_at = assert_utc_timestamp(fetched["received_at"])
    assert before <= received_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert received_at >= assert_utc_timestamp(sent["sent_at"])

    (seen_by_sender,) = (await api.inbox(alice, **{"with": bob.id}))["messages"]
    assert seen_by_sender["received_at"] == fetched["received_at"]


async def test_the_first_fetch_reports_received_at_and_it_never_changes(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(alice, bob.id)
    (first,) = (await api.inbox(bob))["messages"]
    (second,) = (await api.inbox(bob))["messages"]
    assert first["received_at"] is not None
    assert second["received_at"] == first["received_at"]


async def test_only_the_messages_returned_are_marked_received(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    older = await api.send(alice, bob.id, "older")
    newer = await api.send(alice, bob.id, "newer")
    await api.inbox(bob, page_size=1)
    by_id = {m["id"]: m for m in (await api.inbox(alice, **{"with": bob.id}))["messages"]}
    assert by_id[newer["id"]]["received_at"] is not None
    assert by_id[older["id"]]["received_at"] is None


async def test_reading_a_conversation_does_not_mark_what_you_sent(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(alice, bob.id, "unread by bob")
    await api.inbox(alice, **{"with": bob.id})
    (message,) = (await api.inbox(bob, unread="true"))["messages"]
    assert message["message"] == "unread by bob"


async def test_every_timestamp_is_utc_with_a_z(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(alice, bob.id)
    await api.inbox(bob)
    for message in (await api.inbox(bob))["messages"]:
        assert_utc_timestamp(message["sent_at"])
        assert_utc_timestamp(message["received_at"])


# ---------------------------------------------------------------- ordering under concurrent sends


async def test_concurrent_sends_page_forward_in_id_order_exactly_once(live: Api) -> None:
    api = live
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    batches = await asyncio.gather(
        send_many(api, bob, alice.id, 30, batch=30),
        send_many(api, carol, alice.id, 30, batch=30),
        send_many(api, alice, alice.id, 10, batch=10),
    )
    sent = [message_id for batch in batches for message_id in batch]
    assert len(set(sent)) == 70
    seen: list[int] = []
    last = 0
    while page := ids(await api.inbox(alice, after_id=last, page_size=7)):
        seen.extend(page)
        last = page[-1]
    assert seen == sorted(sent)


@pytest.mark.bulk
async def test_a_reader_paging_during_concurrent_sends_never_skips_one(live: Api) -> None:
    """after_id readers must see messages in id order even while writers commit out of order."""
    api = live
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    senders_done = asyncio.Event()
    seen: list[int] = []

    async def reader() -> None:
        last = 0
        while True:
            done = senders_done.is_set()
            page = ids(await api.inbox(alice, after_id=last, page_size=100))
            seen.extend(page)
            last = page[-1] if page else last
            if done and not page:
                return
            # In process, a read with nothing to write never waits on I/O, so without this
            # the reader would hold the event loop and the senders could never run.
            await asyncio.sleep(0)

    async def senders() -> list[int]:
        try:
            batches = await asyncio.gather(
                *(send_many(api, user, alice.id, 40, batch=10) for user in (bob, carol, alice))
            )
        finally:
            senders_done.set()
        return [message_id for batch in batches for message_id in batch]

    sent, _ = await asyncio.gather(senders(), reader())
    assert seen == sorted(sent)
