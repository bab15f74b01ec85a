"""POST /api/v1/chats/: sending a message (its rules) and Idempotency-Key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatserver.config import Settings
from chatserver.migrations import upgrade
from tests.helpers import (
    MESSAGE_FIELDS,
    Api,
    User,
    assert_problem,
    assert_utc_timestamp,
    ids,
    running_app,
)

CHATS = "/api/v1/chats/"


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
