"""/api/v1/chats/: sending (rules, idempotency) and reading (shape, paging, filters, cursors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from chatserver.app import create_app
from chatserver.config import Settings
from chatserver.migrations import upgrade
from chatserver.store import MessageRow
from chatserver.views import MessageCache
from tests.helpers import (
    Api,
    User,
    assert_problem,
    assert_utc_timestamp,
    concurrent_client,
    count_statements,
)

CHATS = "/api/v1/chats/"
MESSAGE_FIELDS = {"id", "sent_by", "received_by", "message", "sent_at", "received_at"}
META_FIELDS = {"count", "next", "current_page", "took", "previous"}


def ids(page: dict[str, Any]) -> list[int]:
    return [m["id"] for m in page["messages"]]


async def send_many(api: Api, sender: User, to: int, count: int, batch: int = 25) -> list[int]:
    """Send ``count`` messages, ``batch`` at a time concurrently; return their ids."""
    sent: list[int] = []
    for start in range(0, count, batch):
        texts = [f"message {n}" for n in range(start, min(start + batch, count))]
        replies = await asyncio.gather(*(api.send(sender, to, text) for text in texts))
        sent.extend(reply["id"] for reply in replies)
    return sent


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Api]:
    """Like ``api``, but requests sent together really race (see concurrent_client)."""
    async with concurrent_client(settings) as client:
        yield Api(client)  # type: ignore[arg-type]


async def post_message(api: Api, sender: User, body: Any, **headers: str) -> Any:
    return await api.client.post(CHATS, json=body, headers={**sender.auth, **headers})


# ---------------------------------------------------------------- sending


async def test_send_returns_201_with_the_message_object(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    before = datetime.now(UTC) - timedelta(seconds=5)
    r = await post_message(api, alice, {"user_id": bob.id, "message": "hai 12"})
    assert r.status_code == 201, r.text
    message = r.json()
    assert set(message) >= MESSAGE_FIELDS
    assert isinstance(message["id"], int)
    assert (message["sent_by"], message["received_by"]) == (alice.id, bob.id)
    assert message["message"] == "hai 12"
    assert message["received_at"] is None
    sent_at = assert_utc_timestamp(message["sent_at"])
    assert before <= sent_at <= datetime.now(UTC) + timedelta(seconds=5)


async def test_sent_message_reaches_the_recipient_only(api: Api) -> None:
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    sent = await api.send(alice, bob.id, "for bob")
    assert ids(await api.inbox(bob)) == [sent["id"]]
    assert ids(await api.inbox(carol)) == []
    assert ids(await api.inbox(alice)) == []


async def test_message_ids_increase(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    first = await api.send(alice, bob.id, "one")
    second = await api.send(bob, alice.id, "two")
    third = await api.send(alice, bob.id, "three")
    assert first["id"] < second["id"] < third["id"]


TEXTS = [
    "a",
    "  leading and trailing spaces  ",
    "line one\nline two\r\nline three\n",
    "\ttab\tinside\t",
    "émoji 👋🏽 family 👨‍👩‍👧 flag 🇳🇴",
    "RTL שלום عليكم",
    "zero\u200bwidth\ufeffjoiners",
    "<script>alert(1)</script> & &amp;",
    "'; DROP TABLE messages; --",
    '\\ backslash \\\\ "quotes" \\u0000 as text',
    "\u00a0non-breaking\u00a0",
]


async def test_messages_are_stored_exactly_as_sent(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    for text in TEXTS:
        assert (await api.send(alice, bob.id, text))["message"] == text
    stored = [m["message"] for m in (await api.inbox(bob, page_size=100))["messages"]]
    assert stored == list(reversed(TEXTS))


async def test_message_length_limits_count_characters(api: Api) -> None:
    alice = await api.signup()
    for text in ("x", "x" * 10_000, "😀" * 10_000, "é" * 10_000):
        r = await post_message(api, alice, {"user_id": alice.id, "message": text})
        assert r.status_code == 201, (len(text), r.text[:200])
        assert r.json()["message"] == text
    stored = {m["message"] for m in (await api.inbox(alice))["messages"]}
    assert "😀" * 10_000 in stored


async def test_invalid_messages_are_400(api: Api, subtests: pytest.Subtests) -> None:
    alice = await api.signup()
    invalid = {
        "empty": "",
        "10001 characters": "x" * 10_001,
        "10001 emoji": "😀" * 10_001,
        "one space": " ",
        "spaces": "     ",
        "mixed whitespace": " \t\n\r\n ",
        "unicode whitespace": "\u00a0\u2003\u3000",
    }
    for case, text in invalid.items():
        with subtests.test(case):
            r = await post_message(api, alice, {"user_id": alice.id, "message": text})
            assert_problem(r, 400, "message")
    assert (await api.inbox(alice))["meta"]["count"] == 0


async def test_unknown_recipient_is_404(api: Api, subtests: pytest.Subtests) -> None:
    alice = await api.signup()
    for user_id in (alice.id + 1, 999_999, 2**63 - 1):
        with subtests.test(user_id=user_id):
            r = await post_message(api, alice, {"user_id": user_id, "message": "hi"})
            assert_problem(r, 404)


async def test_sending_to_yourself_is_allowed(api: Api) -> None:
    alice = await api.signup()
    sent = await api.send(alice, alice.id, "note to self")
    assert (sent["sent_by"], sent["received_by"]) == (alice.id, alice.id)
    inbox = await api.inbox(alice)
    assert ids(inbox) == [sent["id"]]
    assert inbox["meta"]["count"] == 1


async def test_sending_needs_authentication(api: Api) -> None:
    alice = await api.signup()
    r = await api.client.post(CHATS, json={"user_id": alice.id, "message": "hi"})
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"]


# ---------------------------------------------------------------- idempotency


async def test_same_key_and_body_returns_the_first_response(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    body = {"user_id": bob.id, "message": "once"}
    first = await post_message(api, alice, body, **{"Idempotency-Key": "k-1"})
    again = await post_message(api, alice, body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    inbox = await api.inbox(bob)
    assert ids(inbox) == [first.json()["id"]]
    assert inbox["meta"]["count"] == 1


async def test_same_key_with_a_different_body_is_422(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    key = {"Idempotency-Key": "k-1"}
    await post_message(api, alice, {"user_id": bob.id, "message": "once"}, **key)
    other_text = await post_message(api, alice, {"user_id": bob.id, "message": "twice"}, **key)
    assert_problem(other_text, 422)
    other_recipient = await post_message(
        api, alice, {"user_id": alice.id, "message": "once"}, **key
    )
    assert_problem(other_recipient, 422)
    assert (await api.inbox(bob))["meta"]["count"] == 1
    assert (await api.inbox(alice))["meta"]["count"] == 0


async def test_different_keys_send_different_messages(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    body = {"user_id": bob.id, "message": "same text"}
    first = await post_message(api, alice, body, **{"Idempotency-Key": "k-1"})
    second = await post_message(api, alice, body, **{"Idempotency-Key": "k-2"})
    assert first.json()["id"] != second.json()["id"]
    assert (await api.inbox(bob))["meta"]["count"] == 2


async def test_without_a_key_repeats_are_new_messages(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    first = await api.send(alice, bob.id, "same")
    second = await api.send(alice, bob.id, "same")
    assert first["id"] != second["id"]


async def test_keys_are_per_sender(api: Api) -> None:
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    body = {"user_id": carol.id, "message": "same text"}
    from_alice = await post_message(api, alice, body, **{"Idempotency-Key": "shared"})
    from_bob = await post_message(api, bob, body, **{"Idempotency-Key": "shared"})
    assert from_alice.status_code == from_bob.status_code == 201
    assert from_alice.json()["sent_by"] == alice.id
    assert from_bob.json()["sent_by"] == bob.id
    assert (await api.inbox(carol))["meta"]["count"] == 2


async def test_concurrent_repeats_store_one_message(live: Api) -> None:
    api = live
    alice, bob = await api.signup(), await api.signup()
    body = {"user_id": bob.id, "message": "racing"}
    replies = await asyncio.gather(
        *(post_message(api, alice, body, **{"Idempotency-Key": "race"}) for _ in range(8))
    )
    assert [r.status_code for r in replies] == [201] * 8, [r.text for r in replies]
    assert len({r.json()["id"] for r in replies}) == 1
    assert (await api.inbox(bob))["meta"]["count"] == 1


async def test_valid_idempotency_keys_are_accepted(api: Api, subtests: pytest.Subtests) -> None:
    alice = await api.signup()
    for n, key in enumerate(["a", "x" * 255, "!~#$%&'*+-.^_`|0123456789", "550e8400-e29b"]):
        with subtests.test(key=key[:20]):
            body = {"user_id": alice.id, "message": f"m{n}"}
            r = await post_message(api, alice, body, **{"Idempotency-Key": key})
            assert r.status_code == 201, r.text


async def test_invalid_idempotency_keys_are_400(api: Api, subtests: pytest.Subtests) -> None:
    alice = await api.signup()
    body = {"user_id": alice.id, "message": "hi"}
    for case, key in {"empty": b"", "256 characters": b"x" * 256, "space": b"a b"}.items():
        with subtests.test(case):
            r = await api.client.post(
                CHATS, json=body, headers=[*alice.auth.items(), ("Idempotency-Key", key)]
            )
            assert_problem(r, 400, "Idempotency-Key")
    with subtests.test("non-ASCII"):
        headers = [*alice.auth.items(), ("Idempotency-Key", "ключ".encode())]
        assert_problem(await api.client.post(CHATS, json=body, headers=headers), 400)
    assert (await api.inbox(alice))["meta"]["count"] == 0


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Api]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield Api(client)


async def test_idempotency_survives_a_restart(settings: Settings) -> None:
    await asyncio.to_thread(upgrade, settings.database_url)
    key = {"Idempotency-Key": "across-restarts"}
    async with running_app(settings) as api:
        alice = await api.signup()
        first = await post_message(api, alice, {"user_id": alice.id, "message": "once"}, **key)
        assert first.status_code == 201
    async with running_app(settings) as api:
        again = await post_message(api, alice, {"user_id": alice.id, "message": "once"}, **key)
        assert again.status_code == 201
        assert again.json() == first.json()
        other = await post_message(api, alice, {"user_id": alice.id, "message": "other"}, **key)
        assert_problem(other, 422)
        assert (await api.inbox(alice))["meta"]["count"] == 1


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


# ---------------------------------------------------------------- ordering and query counts


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
