"""PATCH /api/v1/chats/{id}/ and replies (``reply_to`` on send), on SQLite and PostgreSQL,
through the public API of a real server (one per module and database)."""

from __future__ import annotations

import pytest

from tests.api.conftest import Node
from tests.api.lifecycle_helpers import (
    api_for,
    delete,
    deleted,
    edit,
    edited,
    events_of,
    message_seen_by,
    people,
    position,
    post_send,
)
from tests.helpers import assert_problem, assert_utc_timestamp

pytestmark = pytest.mark.usefixtures("cheap_passwords")


# ---------------------------------------------------------------- edit


async def test_the_sender_edits_and_both_users_see_only_the_new_text(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        sent = await api.send(alice, bob.id, "helo bob")
        assert sent["edited_at"] is None
        body = await edited(api, alice, sent["id"], "hello bob")
        assert body["message"] == "hello bob"
        edited_at = assert_utc_timestamp(body["edited_at"])
        assert edited_at >= assert_utc_timestamp(sent["sent_at"])
        unchanged = ("id", "sent_by", "received_by", "sent_at", "deleted_at", "reply_to")
        assert {k: body[k] for k in unchanged} == {k: sent[k] for k in unchanged}
        for viewer, peer in ((bob, alice), (alice, bob)):
            seen = await message_seen_by(api, viewer, peer, sent["id"])
            assert seen["message"] == "hello bob"
            assert seen["edited_at"] == body["edited_at"]
        # Edited again: only the latest text is kept.
        again = await edited(api, alice, sent["id"], "hi bob")
        assert (await message_seen_by(api, bob, alice, sent["id"]))["message"] == "hi bob"
        assert again["edited_at"] >= body["edited_at"]


async def test_an_edit_of_a_message_already_fetched_is_not_served_from_the_cache(
    node: Node,
) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        sent = await api.send(alice, bob.id, "first words")
        for _ in range(2):  # the second read serves the received message from the cache
            assert (await api.inbox(bob))["messages"][0]["message"] == "first words"
        await edited(api, alice, sent["id"], "second words")
        page = await api.inbox(bob)
        assert page["messages"][0]["message"] == "second words"
        assert page["messages"][0]["received_at"] is not None


async def test_recipient_403_others_404_unknown_404_deleted_409(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob, carol = await people(api, 3)
        sent = await api.send(alice, bob.id, "original")
        assert_problem(await edit(api, bob, sent["id"], {"message": "mine now"}), 403)
        assert_problem(await edit(api, carol, sent["id"], {"message": "mine now"}), 404)
        assert_problem(await edit(api, alice, sent["id"] + 10_000, {"message": "x"}), 404)
        assert (await message_seen_by(api, bob, alice, sent["id"]))["message"] == "original"
        await deleted(api, alice, sent["id"])
        assert_problem(await edit(api, alice, sent["id"], {"message": "back again"}), 409)


async def test_a_message_to_yourself_is_yours_to_edit(node: Node) -> None:
    async with api_for(node) as api:
        (alice,) = await people(api, 1)
        note = await api.send(alice, alice.id, "note")
        assert (await edited(api, alice, note["id"], "note, edited"))["message"] == "note, edited"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 10_001}, "message"),
        ({"message": 7}, "message"),
        ({"message": "nul \u0000"}, "message"),
        ([], "body"),
    ],
)
async def test_bad_edits_are_400_naming_the_field(node: Node, body: object, field: str) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        sent = await api.send(alice, bob.id, "keep me")
        assert_problem(await edit(api, alice, sent["id"], body), 400, field)
        assert (await message_seen_by(api, alice, bob, sent["id"]))["message"] == "keep me"


async def test_bad_ids_and_no_credentials(node: Node) -> None:
    async with api_for(node) as api:
        (alice,) = await people(api, 1)
        assert_problem(await edit(api, alice, 0, {"message": "x"}), 400, "id")
        assert_problem(await edit(api, alice, 2**63, {"message": "x"}), 400, "id")
        assert_problem(await delete(api, alice, 0), 400, "id")
        r = await api.client.patch("/api/v1/chats/1/", json={"message": "x"})
        assert_problem(r, 401)
        r = await api.client.patch(
            "/api/v1/chats/1/",
            content=b"message=x",
            headers={**alice.auth, "Content-Type": "text/plain"},
        )
        assert_problem(r, 415)


async def test_both_users_get_an_edited_event_at_their_positions(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        sent = await api.send(alice, bob.id, "before")
        alice_pos, bob_pos = await position(api, alice), await position(api, bob)
        body = await edited(api, alice, sent["id"], "after")
        for user, pos in ((alice, alice_pos), (bob, bob_pos)):
            assert await events_of(api, user, pos) == [
                {"type": "edited", "pos": pos + 1, "message": body}
            ]


async def test_a_repeated_send_answers_the_edited_message(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        key = {"Idempotency-Key": "edit-then-repeat"}
        request = {"user_id": bob.id, "message": "typo hree"}
        first = await post_send(api, alice, request, **key)
        assert first.status_code == 201
        body = await edited(api, alice, first.json()["id"], "typo here")
        repeat = await post_send(api, alice, request, **key)
        assert repeat.status_code == 201
        assert repeat.json() == body


# ---------------------------------------------------------------- replies


async def test_a_reply_carries_reply_to_in_every_view(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        question = await api.send(alice, bob.id, "lunch?")
        r = await post_send(
            api, bob, {"user_id": alice.id, "message": "yes", "reply_to": question["id"]}
        )
        assert r.status_code == 201, r.text
        reply = r.json()
        assert reply["reply_to"] == question["id"]
        assert (await message_seen_by(api, alice, bob, reply["id"]))["reply_to"] == question["id"]
        events = await events_of(api, alice)
        assert events[-1]["message"] == {
            **reply,
            "received_at": events[-1]["message"]["received_at"],
        }
        # A reply to oneself in the same conversation, and a reply to a reply.
        again = await post_send(
            api, alice, {"user_id": bob.id, "message": "ok", "reply_to": reply["id"]}
        )
        assert again.status_code == 201
        assert again.json()["reply_to"] == reply["id"]


async def test_reply_to_another_conversation_unknown_or_deleted_is_400(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob, carol = await people(api, 3)
        elsewhere = await api.send(carol, bob.id, "not yours")
        gone = await api.send(alice, bob.id, "soon gone")
        await deleted(api, alice, gone["id"])
        for reply_to in (elsewhere["id"], gone["id"], elsewhere["id"] + 10_000):
            r = await post_send(
                api, alice, {"user_id": bob.id, "message": "re", "reply_to": reply_to}
            )
            assert_problem(r, 400, "reply_to")
        for bad in (0, -1, "1", 2**63, 1.5):
            r = await post_send(api, alice, {"user_id": bob.id, "message": "re", "reply_to": bad})
            assert_problem(r, 400, "reply_to")
        # Nothing was stored by any of them.
        page = await api.inbox(bob, **{"with": alice.id})
        assert [m["message"] for m in page["messages"]] == [None]


async def test_reply_to_is_part_of_the_idempotent_request(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        first, second = await api.send(bob, alice.id, "one"), await api.send(bob, alice.id, "two")
        key = {"Idempotency-Key": "reply-key"}
        body = {"user_id": bob.id, "message": "re", "reply_to": first["id"]}
        r = await post_send(api, alice, body, **key)
        assert r.status_code == 201
        assert (await post_send(api, alice, body, **key)).json() == r.json()
        assert_problem(await post_send(api, alice, {**body, "reply_to": second["id"]}, **key), 422)
        no_reply = {"user_id": bob.id, "message": "re"}
        assert_problem(await post_send(api, alice, no_reply, **key), 422)
