"""DELETE /api/v1/chats/{id}/: tombstones, their events and resume, and the text gone
from the database itself (read directly: every table, the search index's own tables and
the stored Idempotency-Key responses included), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import psycopg
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
    search,
)
from tests.helpers import assert_problem, assert_utc_timestamp, ids
from tests.realtime_helpers import next_event, open_sse, open_stream, wait_until

pytestmark = pytest.mark.usefixtures("cheap_passwords")


async def test_a_deleted_message_is_a_tombstone_in_its_place_for_both(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        question = await api.send(bob, alice.id, "question")
        sent = await post_send(
            api, alice, {"user_id": bob.id, "message": "answer", "reply_to": question["id"]}
        )
        target = sent.json()
        after = await api.send(alice, bob.id, "after it")
        before_bob = await api.inbox(bob, **{"with": alice.id})
        await deleted(api, alice, target["id"])
        for viewer, peer in ((bob, alice), (alice, bob)):
            tomb = await message_seen_by(api, viewer, peer, target["id"])
            assert tomb["message"] is None
            assert_utc_timestamp(tomb["deleted_at"])
            kept = ("id", "sent_by", "received_by", "sent_at", "reply_to", "edited_at")
            assert {k: tomb[k] for k in kept} == {k: target[k] for k in kept}
        # Counts, pages and cursors stay where they were.
        page = await api.inbox(bob, **{"with": alice.id})
        assert ids(page) == ids(before_bob) == [after["id"], target["id"], question["id"]]
        assert page["meta"]["count"] == before_bob["meta"]["count"] == 3
        inbox = await api.inbox(bob)
        assert inbox["meta"]["count"] == 2
        assert ids(await api.inbox(bob, before_id=after["id"])) == [target["id"]]
        assert ids(await api.inbox(bob, after_id=question["id"])) == [target["id"], after["id"]]
        # The conversation's last message may be a tombstone too.
        await deleted(api, alice, after["id"])
        r = await api.get(f"/api/v1/conversations/{alice.id}/", bob)
        assert r.json()["last_message"]["message"] is None


async def test_twice_204_recipient_403_others_404_and_tombstones_stay_so(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob, carol = await people(api, 3)
        sent = await api.send(alice, bob.id, "hello")
        assert_problem(await delete(api, bob, sent["id"]), 403)
        assert_problem(await delete(api, carol, sent["id"]), 404)
        assert_problem(await delete(api, alice, sent["id"] + 10_000), 404)
        assert (await message_seen_by(api, bob, alice, sent["id"]))["message"] == "hello"
        await deleted(api, alice, sent["id"])
        pos = await position(api, bob)
        await deleted(api, alice, sent["id"])  # again: 204, and no second event
        assert await position(api, bob) == pos
        assert_problem(await delete(api, bob, sent["id"]), 403)
        assert_problem(await edit(api, alice, sent["id"], {"message": "undo"}), 409)
        r = await post_send(
            api, bob, {"user_id": alice.id, "message": "re", "reply_to": sent["id"]}
        )
        assert_problem(r, 400, "reply_to")


async def test_both_users_get_a_deleted_event(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        sent = await api.send(alice, bob.id, "to be deleted")
        alice_pos, bob_pos = await position(api, alice), await position(api, bob)
        await deleted(api, alice, sent["id"])
        tomb = await message_seen_by(api, alice, bob, sent["id"])
        for user, pos in ((alice, alice_pos), (bob, bob_pos)):
            (event,) = await events_of(api, user, pos)
            assert event == {
                "type": "deleted",
                "pos": pos + 1,
                "message_id": sent["id"],
                "at": tomb["deleted_at"],
            }


async def test_a_repeated_send_answers_201_with_the_same_id_and_the_tombstone(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        key = {"Idempotency-Key": "delete-then-repeat"}
        request = {"user_id": bob.id, "message": "regret"}
        first = await post_send(api, alice, request, **key)
        await deleted(api, alice, first.json()["id"])
        repeat = await post_send(api, alice, request, **key)
        assert repeat.status_code == 201
        body = repeat.json()
        assert body["id"] == first.json()["id"]
        assert body["message"] is None
        assert body == await message_seen_by(api, alice, bob, body["id"])


async def test_resume_since_replays_the_final_state_in_order(node: Node) -> None:
    """A stream resuming from before a message replays its message, edited and deleted
    events at their positions, each showing the message as it is now (a tombstone)."""
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        since = await position(api, bob)
        kept = await api.send(alice, bob.id, "kept")
        gone = await api.send(alice, bob.id, "gone soon")
        kept_now = await edited(api, alice, kept["id"], "kept, edited")
        await edited(api, alice, gone["id"], "gone, edited")
        await deleted(api, alice, gone["id"])
        tomb = await message_seen_by(api, alice, bob, gone["id"])
        expected = [
            ("message", kept["id"], "kept, edited"),
            ("message", gone["id"], None),
            ("edited", kept["id"], "kept, edited"),
            ("edited", gone["id"], None),
            ("deleted", gone["id"], None),
        ]
        polled = await events_of(api, bob, since)
        async with open_stream(node.ws_url, bob.token, since=since) as ws:
            streamed = [await next_event(ws) for _ in expected]
        async with open_sse(api.client, bob, since=since) as sse:
            over_sse = [(await sse.next()) for _ in expected]
        assert [int(e.id or 0) for e in over_sse] == list(range(since + 1, since + 6))
        for events in (polled, streamed, [e.json() for e in over_sse]):
            assert [e["pos"] for e in events] == list(range(since + 1, since + 6))
            assert [_summary(e) for e in events] == expected
            assert events[2]["message"] == kept_now
            assert events[3]["message"]["deleted_at"] == tomb["deleted_at"]
            assert events[4]["at"] == tomb["deleted_at"]


def _summary(event: dict[str, Any]) -> tuple[str, int, str | None]:
    if event["type"] == "deleted":
        return ("deleted", event["message_id"], None)
    return (event["type"], event["message"]["id"], event["message"]["message"])


# ---------------------------------------------------------------- gone from the database

SECRET = "Quizzaciously mauve parrots memorise 4711 passphrases"
EDITED_AWAY = "Obstreperous ultramarine tapirs"


async def test_the_text_is_gone_from_every_table_of_the_database(node: Node) -> None:
    async with api_for(node) as api:
        alice, bob = await people(api, 2)
        key = {"Idempotency-Key": "secret-key"}
        first = await post_send(api, alice, {"user_id": bob.id, "message": SECRET}, **key)
        assert first.status_code == 201
        await api.inbox(bob)  # fetched (cached as received on this node)
        other = await api.send(alice, bob.id, EDITED_AWAY)
        await edited(api, alice, other["id"], "nothing to see")
        assert _holding(node.database_url, ["quizzaciously"]) != []  # the check can see it
        await deleted(api, alice, first.json()["id"])
        assert (await search(api, bob, "quizzaciously"))["meta"]["count"] == 0
        assert (await search(api, bob, "tapirs"))["meta"]["count"] == 0
        assert (await api.inbox(bob))["messages"][1]["message"] is None
        words = [w.lower() for w in f"{SECRET} {EDITED_AWAY}".split() if not w.isdigit()]

        async def gone() -> bool:
            return _holding(node.database_url, words) == []

        # SQLite merges the old words out of its full-text index within a bound.
        await wait_until(gone, within=10, what="the deleted and edited words to leave the database")


def _holding(database_url: str, words: list[str]) -> list[str]:
    """Each table (and column) of the database with a value holding one of ``words``, in
    any case, as text or inside a binary value: every table, the search index's included."""
    if database_url.startswith("sqlite"):
        return _sqlite_holding(database_url.split(":///", 1)[1], words)
    return _postgres_holding(database_url, words)


def _sqlite_holding(path: str, words: list[str]) -> list[str]:
    found = []
    with closing(sqlite3.connect(path)) as conn:
        # Every table but the FTS5 one itself: it holds nothing; its own tables hold its data.
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND sql NOT LIKE 'CREATE VIRTUAL TABLE%'"
            )
        ]
        assert "message_search_data" in tables  # FTS5's own tables are among them
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                found += [
                    f"{table}.{c}" for c, v in zip(columns, row, strict=True) if _has(v, words)
                ]
    return found


def _postgres_holding(url: str, words: list[str]) -> list[str]:
    found = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(f'SELECT t::text FROM "{table}" AS t').fetchall()
            found += [table for (text,) in rows if _has(text, words)]
    return found


def _has(value: object, words: list[str]) -> bool:
    if isinstance(value, str):
        return any(word in value.lower() for word in words)
    if isinstance(value, bytes):
        return any(word.encode() in value.lower() for word in words)
    return False
