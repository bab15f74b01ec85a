"""GET /api/v1/chats/?q=: full-text search of my messages, on SQLite (FTS5) and PostgreSQL
(tsvector + GIN), through the public API of a real server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Node
from tests.api.lifecycle_helpers import api_for, deleted, edited, people, search
from tests.helpers import Api, User, assert_problem, ids

pytestmark = pytest.mark.usefixtures("cheap_passwords")


async def found(api: Api, user: User, q: str, **params: Any) -> list[int]:
    page = await search(api, user, q, **params)
    assert page["meta"]["count"] == len(page["messages"]) or "page_size" in params, page
    return ids(page)


async def test_every_word_any_case_the_last_one_as_a_prefix(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        fox = await api.send(alice, bob.id, "The quick brown Fox jumps")
        dog = await api.send(bob, alice.id, "a lazy dog, quick as a fox")
        cat = await api.send(alice, bob.id, "FOXES and cats")
        assert await found(api, alice, "quick") == [dog["id"], fox["id"]]
        assert await found(api, alice, "QUICK fox") == [dog["id"], fox["id"]]
        assert await found(api, alice, "fox brown") == [fox["id"]]
        assert await found(api, alice, "fox") == [cat["id"], dog["id"], fox["id"]]  # prefix
        assert await found(api, alice, "fo") == [cat["id"], dog["id"], fox["id"]]
        assert await found(api, alice, "foxes") == [cat["id"]]
        # Only the last word is a prefix; every word must be there.
        assert await found(api, alice, "qui fox") == []
        assert await found(api, alice, "quick zebra") == []
        # Punctuation between words is not part of them.
        assert await found(api, alice, "dog,quick") == [dog["id"]]
        assert await found(api, bob, "lazy-dog") == [dog["id"]]


async def test_only_my_messages_sent_and_received(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob, carol = await people(api, 3)
        to_bob = await api.send(alice, bob.id, "marmalade for bob")
        from_carol = await api.send(carol, alice.id, "marmalade from carol")
        between_others = await api.send(bob, carol.id, "marmalade between them")
        to_self = await api.send(alice, alice.id, "marmalade note")
        assert await found(api, alice, "marmalade") == [
            to_self["id"],
            from_carol["id"],
            to_bob["id"],
        ]
        assert await found(api, bob, "marmalade") == [between_others["id"], to_bob["id"]]
        assert await found(api, carol, "marmalade") == [between_others["id"], from_carol["id"]]
        # with= is one conversation, both ways; a conversation with oneself too.
        assert await found(api, alice, "marmalade", **{"with": carol.id}) == [from_carol["id"]]
        assert await found(api, alice, "marmalade", **{"with": alice.id}) == [to_self["id"]]
        assert await found(api, bob, "marmalade", **{"with": alice.id}) == [to_bob["id"]]
        # A user id is not a word of anyone's messages.
        assert await found(api, alice, f"u{bob.id}") == []
        assert await found(api, alice, f"c{min(alice.id, bob.id)}x{max(alice.id, bob.id)}") == []


async def test_edits_and_deletions_are_reflected(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        one = await api.send(alice, bob.id, "pineapple pizza")
        two = await api.send(alice, bob.id, "pineapple juice")
        await edited(api, alice, one["id"], "mango pizza")
        assert await found(api, bob, "pineapple") == [two["id"]]
        assert await found(api, bob, "mango") == [one["id"]]
        assert await found(api, bob, "pizza") == [one["id"]]
        await deleted(api, alice, two["id"])
        assert await found(api, bob, "pineapple") == []
        assert await found(api, bob, "juice") == []
        assert await found(api, alice, "mango pizza") == [one["id"]]


async def test_pages_newest_first_with_count(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        sent = [(await api.send(alice, bob.id, f"kiwi number {n}"))["id"] for n in range(7)]
        await api.send(alice, bob.id, "no fruit here")
        newest_first = sent[::-1]
        first = await search(api, bob, "kiwi", page_size=3)
        assert ids(first) == newest_first[:3]
        assert first["meta"]["count"] == 7
        assert (first["meta"]["next"], first["meta"]["previous"]) == (2, None)
        last = await search(api, bob, "kiwi", page_size=3, page=3)
        assert ids(last) == newest_first[6:]
        assert (last["meta"]["next"], last["meta"]["previous"]) == (None, 2)
        beyond = await search(api, bob, "kiwi", page_size=3, page=9)
        assert (ids(beyond), beyond["meta"]["count"]) == ([], 7)
        assert ids(await search(api, bob, "kiwi number 3")) == [sent[3]]


async def test_a_search_result_is_a_message_like_any_other(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        sent = await api.send(alice, bob.id, "papaya")
        (message,) = (await search(api, bob, "papaya"))["messages"]
        assert {**message, "received_at": None} == sent
        assert message["received_at"] is not None  # shown to its recipient: received


@pytest.mark.parametrize(
    "q",
    [
        'x"',
        'a"b',
        "fox*",
        "fox AND dog OR NOT x",
        "NEAR(a b)",
        "col:word",
        "it's",
        "a & b | !c",
        "(x) <-> y:*",
        "a\\b'",
        "über ÇA",
        "日本語",
        "x" * 200,
    ],
)
async def test_any_text_is_a_search_never_an_error(node: Node, q: str) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        await api.send(alice, bob.id, "nothing like it")
        page = await search(api, bob, q)
        assert page["meta"]["count"] == 0


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"q": ""}, ["q"]),
        ({"q": "x" * 201}, ["q"]),
        ({"q": "  ...  !?"}, ["q"]),
        ({"q": "nul\u0000"}, ["q"]),
        ({"q": "x", "unread": "true"}, ["unread"]),
        ({"q": "x", "before_id": "5"}, ["before_id"]),
        ({"q": "x", "after_id": "5", "wait": "1"}, ["after_id", "wait"]),
        ({"q": "x", "page_size": "0"}, ["page_size"]),
        ({"q": "x", "with": "zero"}, ["with"]),
    ],
)
async def test_bad_searches_are_400_naming_the_fields(
    node: Node, params: dict[str, str], fields: list[str]
) -> None:
    async with api_for(node) as api:
        (alice,) = await people(api, 1)
        r = await api.get("/api/v1/chats/", alice, **params)
        assert_problem(r, 400, *fields)


async def test_bytes_that_are_not_utf8_are_400_naming_q(node: Node) -> None:
    async with api_for(node) as api:
        (alice,) = await people(api, 1)
        r = await api.client.get("/api/v1/chats/?q=%ff%fe", headers=alice.auth)
        assert_problem(r, 400, "q")
