"""/api/v1/conversations/: who I talk to, ordered by latest message, with read marks.

Every test runs on SQLite and on PostgreSQL (the ``api`` fixture) and goes through the
public HTTP API only; the one exception reads the database to show that a deleted user's
own conversations are gone (nobody can ask the API as that user any more).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from chatserver.config import Settings
from tests.helpers import Api, User, assert_problem, query_database

CONVERSATIONS = "/api/v1/conversations/"
CONVERSATION_FIELDS = {
    "user_id",
    "user",
    "last_message",
    "unread_count",
    "last_read_id",
    "peer_last_read_id",
}


pytestmark = pytest.mark.usefixtures("cheap_passwords")


# ---------------------------------------------------------------- helpers


async def signup_many(api: Api, count: int) -> list[User]:
    return [await api.signup() for _ in range(count)]


async def conversations(api: Api, user: User, **params: Any) -> dict[str, Any]:
    r = await api.get(CONVERSATIONS, user, **params)
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    assert set(page) == {"conversations", "next", "unread_total"}
    for conversation in page["conversations"]:
        assert set(conversation) == CONVERSATION_FIELDS
    return page


async def conversation(api: Api, user: User, peer_id: int) -> dict[str, Any]:
    r = await api.get(f"{CONVERSATIONS}{peer_id}/", user)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == CONVERSATION_FIELDS
    return body


async def post_read(api: Api, user: User, peer_id: int | str, body: Any) -> httpx.Response:
    return await api.client.post(f"{CONVERSATIONS}{peer_id}/read", json=body, headers=user.auth)


async def mark_read(api: Api, user: User, peer_id: int, up_to_id: int) -> dict[str, Any]:
    r = await post_read(api, user, peer_id, {"up_to_id": up_to_id})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == CONVERSATION_FIELDS
    return body


def peers(page: dict[str, Any]) -> list[int]:
    return [c["user_id"] for c in page["conversations"]]


async def events_of(api: Api, user: User, since: int = 0) -> list[dict[str, Any]]:
    r = await api.get("/api/v1/events", user, since=since, limit=500)
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


# ---------------------------------------------------------------- listing and ordering


async def test_no_conversations_yet(api: Api) -> None:
    alice = await api.signup()
    assert await conversations(api, alice) == {"conversations": [], "next": None, "unread_total": 0}


async def test_ordered_by_latest_message_either_direction_self_included(api: Api) -> None:
    alice, bob, carol, dave = await signup_many(api, 4)
    to_bob = await api.send(alice, bob.id, "hi bob")  # alice -> bob
    from_carol = await api.send(carol, alice.id, "hi alice")  # carol -> alice
    to_self = await api.send(alice, alice.id, "note to self")
    await api.send(bob, carol.id, "not alice's business")
    from_dave = await api.send(dave, alice.id, "hello")

    page = await conversations(api, alice)
    assert peers(page) == [dave.id, alice.id, carol.id, bob.id]
    assert [c["last_message"]["id"] for c in page["conversations"]] == [
        from_dave["id"],
        to_self["id"],
        from_carol["id"],
        to_bob["id"],
    ]
    assert page["conversations"][-1]["last_message"] == to_bob
    assert page["next"] is None
    by_peer = {c["user_id"]: c for c in page["conversations"]}
    assert by_peer[bob.id]["user"]["id"] == bob.id
    assert by_peer[bob.id]["user"]["username"] == bob.username

    # A reply moves that conversation to the top, whoever sends it.
    reply = await api.send(bob, alice.id, "hi alice")
    page = await conversations(api, alice)
    assert peers(page) == [bob.id, dave.id, alice.id, carol.id]
    assert page["conversations"][0]["last_message"] == reply
    await api.send(alice, carol.id, "hi carol")
    assert peers(await conversations(api, alice)) == [carol.id, bob.id, dave.id, alice.id]

    # Bob's view: alice and carol, his own latest first.
    assert peers(await conversations(api, bob)) == [alice.id, carol.id]


async def test_paging_with_before_and_next_walks_every_conversation_once(api: Api) -> None:
    alice, *others = await signup_many(api, 6)
    latest: dict[int, int] = {}
    for i, other in enumerate(others):
        # Alternate directions; each conversation's latest message is newer than the last.
        sender, recipient = (alice, other) if i % 2 else (other, alice)
        latest[other.id] = (await api.send(sender, recipient.id, f"m{i}"))["id"]
    expected = sorted(latest, key=latest.__getitem__, reverse=True)

    seen: list[int] = []
    pages: list[list[int]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"page_size": 2}
        if before is not None:
            params["before"] = before
        page = await conversations(api, alice, **params)
        pages.append(peers(page))
        seen += peers(page)
        for c in page["conversations"]:
            if before is not None:
                assert c["last_message"]["id"] < before
        if page["next"] is None:
            break
        assert page["next"] == page["conversations"][-1]["last_message"]["id"]
        before = page["next"]
        assert len(pages) < 10, "paging never ended"
    assert seen == expected
    assert [len(p) for p in pages] == [2, 2, 1]

    # A page size that divides the total exactly: the last full page says no next.
    page = await conversations(api, alice, page_size=5)
    assert (peers(page), page["next"]) == (expected, None)
    page = await conversations(api, alice, page_size=4)
    assert (peers(page), page["next"]) == (expected[:4], latest[expected[3]])
    last = await conversations(api, alice, page_size=4, before=page["next"])
    assert (peers(last), last["next"]) == (expected[4:], None)

    # before = any message id: only conversations whose latest message is older.
    middle = latest[expected[2]]
    assert peers(await conversations(api, alice, before=middle)) == expected[3:]
    assert peers(await conversations(api, alice, before=middle + 1)) == expected[2:]
    assert peers(await conversations(api, alice, before=1)) == []
    # The default page size is 20: every one of them on one page.
    assert peers(await conversations(api, alice)) == expected


# ---------------------------------------------------------------- unread counts and read marks


async def test_unread_counts_follow_sends_and_read_marks_in_both_directions(api: Api) -> None:
    alice, bob = await signup_many(api, 2)
    sent = [await api.send(bob, alice.id, f"b{i}") for i in range(3)]

    mine = await conversation(api, alice, bob.id)
    assert (mine["unread_count"], mine["last_read_id"], mine["peer_last_read_id"]) == (3, 0, 0)
    assert mine["last_message"] == sent[-1]
    theirs = await conversation(api, bob, alice.id)
    assert theirs["unread_count"] == 0  # own messages are never unread
    assert (await conversations(api, alice))["unread_total"] == 3
    assert (await conversations(api, bob))["unread_total"] == 0

    after = await mark_read(api, alice, bob.id, sent[1]["id"])
    assert (after["unread_count"], after["last_read_id"]) == (1, sent[1]["id"])
    assert after == await conversation(api, alice, bob.id)
    theirs = await conversation(api, bob, alice.id)
    assert (theirs["peer_last_read_id"], theirs["last_read_id"]) == (sent[1]["id"], 0)

    # Alice answers: bob has one unread, alice's count does not change.
    reply = await api.send(alice, bob.id, "a0")
    assert (await conversation(api, alice, bob.id))["unread_count"] == 1
    theirs = await conversation(api, bob, alice.id)
    assert (theirs["unread_count"], theirs["last_message"]) == (1, reply)

    # Bob reads it; alice sees his mark.
    theirs = await mark_read(api, bob, alice.id, reply["id"])
    assert (theirs["unread_count"], theirs["last_read_id"]) == (0, reply["id"])
    assert theirs["peer_last_read_id"] == sent[1]["id"]
    mine = await conversation(api, alice, bob.id)
    assert (mine["unread_count"], mine["peer_last_read_id"]) == (1, reply["id"])

    # Alice reads up to her own reply: that covers bob's last message too.
    mine = await mark_read(api, alice, bob.id, reply["id"])
    assert (mine["unread_count"], mine["last_read_id"]) == (0, reply["id"])
    assert (await conversations(api, alice))["unread_total"] == 0

    # New messages after the mark are unread again.
    await api.send(bob, alice.id, "b3")
    assert (await conversation(api, alice, bob.id))["unread_count"] == 1


async def test_unread_total_sums_every_conversation(api: Api) -> None:
    alice, bob, carol, dave = await signup_many(api, 4)
    for _ in range(2):
        await api.send(bob, alice.id, "from bob")
    carols = [await api.send(carol, alice.id, f"from carol {i}") for i in range(3)]
    await api.send(alice, dave.id, "to dave")  # no unread for alice here
    await api.send(alice, alice.id, "self")  # never unread

    page = await conversations(api, alice)
    counts = {c["user_id"]: c["unread_count"] for c in page["conversations"]}
    assert counts == {bob.id: 2, carol.id: 3, dave.id: 0, alice.id: 0}
    assert page["unread_total"] == 5
    # Also on a page that does not show every conversation.
    small = await conversations(api, alice, page_size=1)
    assert (len(small["conversations"]), small["unread_total"]) == (1, 5)

    await mark_read(api, alice, carol.id, carols[0]["id"])
    assert (await conversations(api, alice))["unread_total"] == 4
    await mark_read(api, alice, carol.id, carols[-1]["id"])
    assert (await conversations(api, alice))["unread_total"] == 2
    await api.send(dave, alice.id, "from dave")
    assert (await conversations(api, alice))["unread_total"] == 3


async def test_a_read_mark_never_moves_back_and_is_clamped_to_the_latest_message(
    api: Api,
) -> None:
    alice, bob, carol = await signup_many(api, 3)
    sent = [await api.send(bob, alice.id, f"b{i}") for i in range(4)]
    # Unrelated messages with higher ids than this conversation's latest.
    other = await api.send(carol, alice.id, "elsewhere")

    at_two = await mark_read(api, alice, bob.id, sent[2]["id"])
    assert (at_two["last_read_id"], at_two["unread_count"]) == (sent[2]["id"], 1)
    # Lower, equal and zero: 200, nothing changes.
    for lower in (sent[0]["id"], sent[2]["id"], 0):
        assert await mark_read(api, alice, bob.id, lower) == at_two
    # Beyond the latest: clamped to the conversation's latest message id.
    for beyond in (other["id"], 10**15, 2**63 - 1):
        clamped = await mark_read(api, alice, bob.id, beyond)
        assert (clamped["last_read_id"], clamped["unread_count"]) == (sent[-1]["id"], 0)
    theirs = await conversation(api, bob, alice.id)
    assert theirs["peer_last_read_id"] == sent[-1]["id"]
    # And the mark on the other conversation did not move.
    assert (await conversation(api, alice, carol.id))["last_read_id"] == 0

    # One read event per move for each of them (the no-op marks published nothing).
    reads = [e for e in await events_of(api, bob) if e["type"] == "read"]
    assert [(e["by"], e["of"], e["up_to_id"]) for e in reads] == [
        (alice.id, bob.id, sent[2]["id"]),
        (alice.id, bob.id, sent[-1]["id"]),
    ]


async def test_the_self_conversation_is_never_unread(api: Api) -> None:
    alice = await api.signup()
    notes = [await api.send(alice, alice.id, f"note {i}") for i in range(3)]
    mine = await conversation(api, alice, alice.id)
    assert mine["user_id"] == alice.id
    assert mine["user"]["id"] == alice.id
    assert mine["last_message"] == notes[-1]
    assert (mine["unread_count"], mine["last_read_id"], mine["peer_last_read_id"]) == (0, 0, 0)
    page = await conversations(api, alice)
    assert (peers(page), page["unread_total"]) == ([alice.id], 0)

    marked = await mark_read(api, alice, alice.id, notes[1]["id"])
    assert marked["unread_count"] == 0
    assert marked["last_read_id"] == marked["peer_last_read_id"] == notes[1]["id"]
    assert marked == await conversation(api, alice, alice.id)
    marked = await mark_read(api, alice, alice.id, 10**12)
    assert marked["last_read_id"] == marked["peer_last_read_id"] == notes[-1]["id"]
    # One read event per move, once (not one per side of the same conversation).
    reads = [e for e in await events_of(api, alice) if e["type"] == "read"]
    assert [(e["by"], e["of"], e["up_to_id"]) for e in reads] == [
        (alice.id, alice.id, notes[1]["id"]),
        (alice.id, alice.id, notes[-1]["id"]),
    ]


async def test_fetching_chats_marks_received_not_read(api: Api) -> None:
    alice, bob = await signup_many(api, 2)
    sent = [await api.send(bob, alice.id, f"b{i}") for i in range(2)]
    inbox = await api.inbox(alice)
    assert {m["id"] for m in inbox["messages"]} >= {m["id"] for m in sent}

    mine = await conversation(api, alice, bob.id)
    assert (mine["unread_count"], mine["last_read_id"]) == (2, 0)
    assert mine["last_message"]["received_at"] is not None
    assert (await conversations(api, alice))["unread_total"] == 2
    assert (await conversation(api, bob, alice.id))["peer_last_read_id"] == 0

    # The sender heard "received", and no "read".
    kinds = [e["type"] for e in await events_of(api, bob)]
    assert kinds == ["message", "message", "received"]
    received = (await events_of(api, bob))[-1]
    assert received["by"] == alice.id
    assert sorted(received["message_ids"]) == [m["id"] for m in sent]


# ---------------------------------------------------------------- deleted accounts


async def test_a_deleted_peer_leaves_the_conversation_with_user_null(
    api: Api, settings: Settings
) -> None:
    alice, bob, carol = await signup_many(api, 3)
    from_bob = await api.send(bob, alice.id, "bye soon")
    await api.send(alice, bob.id, "why?")  # received by bob: goes with his account
    await api.send(bob, carol.id, "bye carol")
    await api.send(bob, bob.id, "note")

    r = await api.client.delete("/api/v1/users/", headers=bob.auth)
    assert r.status_code == 204, r.text

    mine = await conversation(api, alice, bob.id)
    assert mine["user_id"] == bob.id
    assert mine["user"] is None
    assert mine["last_message"] == from_bob  # the one left in the conversation
    assert mine["unread_count"] == 1
    page = await conversations(api, alice)
    assert peers(page) == [bob.id]
    assert page["conversations"][0] == mine
    assert page["unread_total"] == 1
    # Still markable as read.
    marked = await mark_read(api, alice, bob.id, from_bob["id"])
    assert (marked["user"], marked["unread_count"], marked["last_read_id"]) == (
        None,
        0,
        from_bob["id"],
    )
    assert (await conversation(api, carol, bob.id))["user"] is None

    # Bob's own conversations are gone (nobody can ask the API as bob any more).
    rows = query_database(
        settings.database_url, f"SELECT count(*) FROM conversations WHERE user_id = {bob.id}"
    )
    assert rows == [(0,)]
    r = await api.get(CONVERSATIONS, bob)
    assert r.status_code == 401


# ---------------------------------------------------------------- not found and bad input


async def test_404_when_never_exchanged(api: Api) -> None:
    alice, bob, carol = await signup_many(api, 3)
    await api.send(bob, carol.id, "between them")
    for peer_id in (bob.id, carol.id, alice.id, 10**9):
        r = await api.get(f"{CONVERSATIONS}{peer_id}/", alice)
        assert_problem(r, 404)
        r = await post_read(api, alice, peer_id, {"up_to_id": 1})
        assert_problem(r, 404)
    # Nothing was created by asking.
    assert (await conversations(api, alice))["conversations"] == []


async def test_conversations_need_authentication(api: Api) -> None:
    alice, bob = await signup_many(api, 2)
    await api.send(alice, bob.id, "hi")
    assert_problem(await api.get(CONVERSATIONS), 401)
    assert_problem(await api.get(f"{CONVERSATIONS}{bob.id}/"), 401)
    r = await api.client.post(f"{CONVERSATIONS}{bob.id}/read", json={"up_to_id": 1})
    assert_problem(r, 401)


BAD_LIST_PARAMETERS: list[tuple[dict[str, Any], str]] = [
    ({"page_size": 0}, "page_size"),
    ({"page_size": 101}, "page_size"),
    ({"page_size": "abc"}, "page_size"),
    ({"page_size": ""}, "page_size"),
    ({"before": -1}, "before"),
    ({"before": 0}, "before"),
    ({"before": "abc"}, "before"),
    ({"before": 2**63}, "before"),
    ({"before": 10**30}, "before"),
]
BAD_READ_MARKS = [
    {"up_to_id": -1},
    {"up_to_id": "x"},
    {"up_to_id": "1"},
    {"up_to_id": None},
    {"up_to_id": 1.5},
    {"up_to_id": True},
    {"up_to_id": 2**63},
    {"up_to_id": 10**30},
    {},
    {"up_to": 1},
]
NOT_OBJECTS = [b"", b"not json", b"[1]", b'"up_to_id"', b"{", b"null"]
BAD_PATH_IDS = ["0", "-1", "99999999999999999999", str(2**63), "abc", "1.5", "1e3"]


async def test_bad_list_parameters_are_400_naming_the_field(api: Api) -> None:
    alice, bob = await signup_many(api, 2)
    await api.send(alice, bob.id, "hi")
    for params, field in BAD_LIST_PARAMETERS:
        assert_problem(await api.get(CONVERSATIONS, alice, **params), 400, field)
    for size in (1, 100):  # the bounds themselves are fine
        assert peers(await conversations(api, alice, page_size=size)) == [bob.id]


async def test_bad_read_marks_are_400_naming_up_to_id(api: Api) -> None:
    alice, bob = await signup_many(api, 2)
    await api.send(bob, alice.id, "hi")
    for body in BAD_READ_MARKS:
        assert_problem(await post_read(api, alice, bob.id, body), 400, "up_to_id")
    for raw in NOT_OBJECTS:
        r = await api.client.post(
            f"{CONVERSATIONS}{bob.id}/read",
            content=raw,
            headers={**alice.auth, "Content-Type": "application/json"},
        )
        assert_problem(r, 400)
    assert (await conversation(api, alice, bob.id))["last_read_id"] == 0


async def test_bad_user_ids_in_the_path_are_client_errors(api: Api) -> None:
    alice, bob = await signup_many(api, 2)
    await api.send(alice, bob.id, "hi")
    for user_id in BAD_PATH_IDS:
        for r in (
            await api.get(f"{CONVERSATIONS}{user_id}/", alice),
            await post_read(api, alice, user_id, {"up_to_id": 1}),
        ):
            assert r.status_code in (400, 404), (user_id, r.status_code, r.text)
            assert_problem(r, r.status_code)
            if r.status_code == 400:
                assert "user_id" in r.json().get("errors", {}), (user_id, r.text)
