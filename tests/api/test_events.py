"""Event positions: every stored event of a user carries ``pos`` (1, 2, 3 …), and resuming
from any position — ``GET /api/v1/events``, or the stream over SSE or WebSocket — gives
exactly the events after it, oldest first, then live ones: no gap, no duplicate, every kind.

The app runs in this process on a real socket (`serve_in_thread`), on SQLite and on
PostgreSQL, so SSE and WebSocket clients are real ones. Every wait is bounded and waits
for an event, never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from chatserver import store
from chatserver.config import Settings
from tests.helpers import Api, User, assert_problem, assert_utc_timestamp
from tests.realtime_helpers import (
    TIMEOUT,
    LiveServer,
    SseReader,
    next_event,
    open_sse,
    read_until_closed,
    serve_in_thread,
    wait_until,
)

EVENTS = "/api/v1/events"
CLOSE_INVALID = 1008

# ------------------------------------------------------------------ fixtures

# Several tests send hundreds of messages (resume, replay pages, concurrent senders):
# this module's servers run with the rate limits off (tests/api/test_limits.py tests them).
pytestmark = [pytest.mark.bulk, pytest.mark.usefixtures("cheap_passwords")]


@contextlib.asynccontextmanager
async def client_for(server: LiveServer) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield Api(client)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[LiveServer]:
    """`serve_in_thread` from a test coroutine: it migrates, which runs an event loop of
    its own on PostgreSQL, so it is entered and left from a worker thread."""
    manager = serve_in_thread(settings)
    server = await asyncio.to_thread(manager.__enter__)
    try:
        yield server
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


@pytest.fixture
async def api(server: LiveServer) -> AsyncIterator[Api]:
    async with client_for(server) as api:
        yield api


# ------------------------------------------------------------------ helpers


async def poll(api: Api, user: User, **params: Any) -> dict[str, Any]:
    """One ``GET /api/v1/events``; asserts 200 and the page's shape."""
    r = await api.get(EVENTS, user, **params)
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    assert set(page) == {"events", "next", "reset"}
    return page


async def current_pos(api: Api, user: User) -> int:
    """Without ``since``: no events, and the current position."""
    page = await poll(api, user)
    assert (page["events"], page["reset"]) == ([], False)
    pos: int = page["next"]
    return pos


async def events_after(api: Api, user: User, since: int, limit: int = 100) -> list[dict[str, Any]]:
    """Every event after ``since``, page by page (``next`` as the following ``since``)."""
    events: list[dict[str, Any]] = []
    for _ in range(1000):
        page = await poll(api, user, since=since, limit=limit)
        assert page["reset"] is False
        assert len(page["events"]) <= limit
        if not page["events"]:
            assert page["next"] == since
            return events
        assert [e["pos"] for e in page["events"]] == list(range(since + 1, page["next"] + 1))
        events += page["events"]
        since = page["next"]
    raise AssertionError("paging never ended")


async def sse_events(reader: SseReader, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events on an SSE stream; each one's ``id:`` is its position."""
    events = []
    for _ in range(count):
        event = await reader.next()
        body = event.json()
        assert event.id == str(body["pos"]), (event.id, body)
        events.append(body)
    return events


async def ws_events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await next_event(ws) for _ in range(count)]


@contextlib.asynccontextmanager
async def open_ws(
    server: LiveServer, user: User | None, query: str = ""
) -> AsyncIterator[ClientConnection]:
    """A stream socket with a raw query string (``since=…``), Bearer auth unless None."""
    headers = user.auth if user is not None else {}
    url = f"{server.ws_url}/api/v1/stream{'?' + query if query else ''}"
    async with websockets.connect(url, additional_headers=headers, open_timeout=TIMEOUT) as ws:
        yield ws


async def fetch(api: Api, user: User) -> None:
    """Fetch the inbox: marks what was sent to ``user`` received."""
    await api.inbox(user)


async def mark_read(api: Api, user: User, peer_id: int, up_to_id: int) -> dict[str, Any]:
    r = await api.client.post(
        f"/api/v1/conversations/{peer_id}/read", json={"up_to_id": up_to_id}, headers=user.auth
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def record_mixed_sequence(api: Api) -> tuple[User, list[dict[str, Any]], dict[str, Any]]:
    """Bob's events: messages both ways and to himself, received and read marks (his and
    his peers'). Returns bob, his events from position 0, and the messages by name."""
    alice, bob, carol = [await api.signup() for _ in range(3)]
    sent: dict[str, Any] = {}
    sent["a1"] = await api.send(alice, bob.id, "a1")  # bob 1: message
    sent["b1"] = await api.send(bob, alice.id, "b1")  # bob 2: message
    await fetch(api, alice)  # bob 3: received (b1)
    await fetch(api, bob)  # alice hears "received"; nothing for bob
    await mark_read(api, alice, bob.id, sent["b1"]["id"])  # bob 4: read (by alice)
    await mark_read(api, bob, alice.id, 10**12)  # bob 5: read (by bob, clamped to b1)
    sent["self"] = await api.send(bob, bob.id, "note")  # bob 6: one message event
    sent["c1"] = await api.send(carol, bob.id, "c1")  # bob 7: message
    await mark_read(api, bob, carol.id, sent["c1"]["id"])  # bob 8: read (by bob)
    sent["b2"] = await api.send(bob, carol.id, "b2")  # bob 9: message
    await fetch(api, carol)  # bob 10: received (b2)
    sent["carol"] = carol
    events = await events_after(api, bob, 0)
    return bob, events, sent


# ------------------------------------------------------------------ positions and resume


async def test_the_recorded_sequence_has_dense_positions_and_every_kind(api: Api) -> None:
    bob, events, sent = await record_mixed_sequence(api)
    assert [e["pos"] for e in events] == list(range(1, 11))
    assert [e["type"] for e in events] == [
        "message",
        "message",
        "received",
        "read",
        "read",
        "message",
        "message",
        "read",
        "message",
        "received",
    ]
    a1, b1, c1 = sent["a1"], sent["b1"], sent["c1"]
    # Replay shows each message as it is now: fetched since, so received_at is set.
    assert a1["received_at"] is None
    assert b1["received_at"] is None
    assert events[0]["message"] == {**a1, "received_at": events[0]["message"]["received_at"]}
    assert_utc_timestamp(events[0]["message"]["received_at"])
    assert_utc_timestamp(events[1]["message"]["received_at"])
    assert events[2]["message_ids"] == [b1["id"]]
    assert events[2]["by"] == b1["received_by"]
    assert_utc_timestamp(events[2]["at"])
    alice_id = a1["sent_by"]
    assert {k: events[3][k] for k in ("by", "of", "up_to_id")} == {
        "by": alice_id,
        "of": bob.id,
        "up_to_id": b1["id"],
    }
    assert {k: events[4][k] for k in ("by", "of", "up_to_id")} == {
        "by": bob.id,
        "of": alice_id,
        "up_to_id": b1["id"],  # clamped to the conversation's latest message
    }
    assert events[5]["message"]["id"] == sent["self"]["id"]
    assert events[6]["message"]["id"] == c1["id"]
    assert events[9]["message_ids"] == [sent["b2"]["id"]]
    # Without since: nothing, and the current position.
    assert await poll(api, bob) == {"events": [], "next": 10, "reset": False}


async def test_resuming_from_every_position_gives_exactly_the_suffix(
    server: LiveServer, api: Api
) -> None:
    bob, events, sent = await record_mixed_sequence(api)
    last = len(events)
    for p in range(last + 1):
        page = await poll(api, bob, since=p)
        assert page == {"events": events[p:], "next": last, "reset": False}, p
        assert await events_after(api, bob, p, limit=3) == events[p:], p
        page = await poll(api, bob, since=p, limit=1)
        assert page == {"events": events[p : p + 1], "next": min(p + 1, last), "reset": False}

    async with contextlib.AsyncExitStack() as stack:
        # One SSE and one WebSocket stream resuming from every position, all open at once.
        sse = [
            await stack.enter_async_context(open_sse(api.client, bob, since=p))
            for p in range(last + 1)
        ]
        sockets = [
            await stack.enter_async_context(open_ws(server, bob, f"since={p}"))
            for p in range(last + 1)
        ]
        # Last-Event-ID is a position, and wins over the query a reconnecting
        # EventSource repeats.
        by_header = await stack.enter_async_context(
            open_sse(api.client, bob, headers={"Last-Event-ID": "6"}, since=2)
        )
        # after_id (a message id) still works: after a1, which is bob's position 1.
        by_message = await stack.enter_async_context(
            open_sse(api.client, bob, after_id=sent["a1"]["id"])
        )
        # since in the WebSocket auth frame.
        by_frame = await stack.enter_async_context(open_ws(server, None))
        await by_frame.send(json.dumps({"type": "auth", "token": bob.token, "since": 4}))

        for p, reader in enumerate(sse):
            assert await sse_events(reader, last - p) == events[p:], p
        for p, ws in enumerate(sockets):
            assert await ws_events(ws, last - p) == events[p:], p
        assert await sse_events(by_header, last - 6) == events[6:]
        assert await sse_events(by_message, last - 1) == events[1:]
        assert await ws_events(by_frame, last - 4) == events[4:]

        # Then live, and nothing else came in between: the next event everywhere is
        # the new one, at the next position.
        live = await api.send(sent["carol"], bob.id, "live")
        expected = {"type": "message", "pos": last + 1, "message": live}
        for reader in [*sse, by_header, by_message]:
            assert await sse_events(reader, 1) == [expected]
        for ws in [*sockets, by_frame]:
            assert await ws_events(ws, 1) == [expected]
    assert await poll(api, bob, since=last) == {
        "events": [expected],
        "next": last + 1,
        "reset": False,
    }


async def test_a_read_mark_reaches_both_users_and_the_readers_other_stream(
    server: LiveServer, api: Api
) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = [await api.send(bob, alice.id, f"b{i}") for i in range(2)]
    alice_at, bob_at = await current_pos(api, alice), await current_pos(api, bob)
    async with (
        open_ws(server, alice, f"since={alice_at}") as alice_one,
        open_sse(api.client, alice, since=alice_at) as alice_two,
        open_ws(server, bob, f"since={bob_at}") as bob_ws,
    ):
        await mark_read(api, alice, bob.id, sent[0]["id"])
        for_alice = await ws_events(alice_one, 1)
        assert await sse_events(alice_two, 1) == for_alice
        for_bob = await ws_events(bob_ws, 1)
        read = {"type": "read", "by": alice.id, "of": bob.id, "up_to_id": sent[0]["id"]}
        assert for_alice == [{**read, "pos": alice_at + 1, "at": for_alice[0]["at"]}]
        assert for_bob == [{**read, "pos": bob_at + 1, "at": for_alice[0]["at"]}]
        assert_utc_timestamp(for_alice[0]["at"])
        # A mark that does not move publishes nothing: the next event is the next move.
        await mark_read(api, alice, bob.id, sent[0]["id"])
        await mark_read(api, alice, bob.id, sent[1]["id"])
        nxt = await ws_events(bob_ws, 1)
        assert (nxt[0]["pos"], nxt[0]["up_to_id"]) == (bob_at + 2, sent[1]["id"])
        assert (await ws_events(alice_one, 1))[0]["pos"] == alice_at + 2
        assert (await sse_events(alice_two, 1))[0]["pos"] == alice_at + 2
    assert await events_after(api, bob, bob_at) == [for_bob[0], nxt[0]]


async def test_messages_gone_with_a_deleted_account_leave_a_hole_not_a_reset(
    server: LiveServer, api: Api
) -> None:
    """Alice's copy of a message she sent bob goes when bob deletes his account: replay
    skips that position (positions still only increase), and it is not a reset."""
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    await api.send(alice, bob.id, "to bob")  # alice 1: goes with bob's account
    kept = await api.send(bob, alice.id, "from bob")  # alice 2: stays
    r = await api.client.delete("/api/v1/users/", headers=bob.auth)
    assert r.status_code == 204, r.text
    expected = [{"type": "message", "pos": 2, "message": kept}]
    for since in (0, 1):
        assert await poll(api, alice, since=since) == {
            "events": expected,
            "next": 2,
            "reset": False,
        }
    # The hole takes no room in a page: one event asked for, the next one comes.
    assert await poll(api, alice, since=0, limit=1) == {
        "events": expected,
        "next": 2,
        "reset": False,
    }
    async with open_sse(api.client, alice, since=0) as sse, open_ws(server, alice, "since=0") as ws:
        assert await sse_events(sse, 1) == expected
        assert await ws_events(ws, 1) == expected
        live = await api.send(carol, alice.id, "still here")
        after = [{"type": "message", "pos": 3, "message": live}]
        assert await sse_events(sse, 1) == after
        assert await ws_events(ws, 1) == after


# ------------------------------------------------------------------ long-poll


async def test_a_long_poll_returns_as_soon_as_an_event_arrives(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    since = await current_pos(api, bob)
    waiting = asyncio.create_task(poll(api, bob, since=since, wait=20))
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done, "nothing newer exists: the poll must be held"
    sent = await api.send(alice, bob.id, "wake up")
    page = await asyncio.wait_for(waiting, timeout=15)  # well before wait=20 runs out
    assert page == {
        "events": [{"type": "message", "pos": since + 1, "message": sent}],
        "next": since + 1,
        "reset": False,
    }


async def test_a_long_poll_is_woken_by_a_read_mark_too(api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = await api.send(bob, alice.id, "hi")
    since = await current_pos(api, bob)
    waiting = asyncio.create_task(poll(api, bob, since=since, wait=20))
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done
    await mark_read(api, alice, bob.id, sent["id"])
    page = await asyncio.wait_for(waiting, timeout=15)
    assert [(e["type"], e["pos"]) for e in page["events"]] == [("read", since + 1)]


async def test_a_long_poll_returns_at_once_when_events_exist_and_empty_at_the_timeout(
    api: Api,
) -> None:
    alice, bob = await api.signup(), await api.signup()
    sent = await api.send(alice, bob.id, "already here")
    page = await asyncio.wait_for(poll(api, bob, since=0, wait=20), timeout=15)
    assert page["events"] == [{"type": "message", "pos": 1, "message": sent}]
    assert await poll(api, bob, since=1, wait=1) == {"events": [], "next": 1, "reset": False}
    assert await poll(api, bob, since=1, wait=0) == {"events": [], "next": 1, "reset": False}


async def test_bad_event_parameters_are_400_naming_the_field(server: LiveServer, api: Api) -> None:
    bob = await api.signup()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": -1}, "since"),
        ({"since": "abc"}, "since"),
        ({"since": 2**63}, "since"),
        ({"wait": 31}, "wait"),
        ({"wait": -1}, "wait"),
        ({"wait": "x"}, "wait"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "x"}, "limit"),
    ]
    for params, field in cases:
        assert_problem(await api.get(EVENTS, bob, **{"since": 0, **params}), 400, field)
    assert_problem(await api.get(EVENTS, None, since=0), 401)
    r = await api.client.get(
        "/api/v1/stream",
        params={"since": -1},
        headers={**bob.auth, "Accept": "text/event-stream"},
    )
    assert_problem(r, 400, "since")
    r = await api.client.get(
        "/api/v1/stream",
        headers={**bob.auth, "Accept": "text/event-stream", "Last-Event-ID": "nope"},
    )
    assert r.status_code == 400, r.text
    async with open_ws(server, bob, "since=-1") as ws:
        code, frames = await read_until_closed(ws)
    assert code == CLOSE_INVALID
    assert [json.loads(f)["type"] for f in frames] == ["error"]


# ------------------------------------------------------------------ reset


async def test_since_beyond_the_current_position_is_a_reset(server: LiveServer, api: Api) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(alice, bob.id, "one")
    current = await current_pos(api, bob)
    assert current == 1
    for since in (current + 1, 10**12):
        assert await poll(api, bob, since=since) == {"events": [], "next": 1, "reset": True}
        assert await poll(api, bob, since=since, wait=5) == {
            "events": [],
            "next": 1,
            "reset": True,
        }
    async with (
        open_sse(api.client, bob, since=current + 5) as sse,
        open_ws(server, bob, f"since={current + 5}") as ws,
    ):
        reset = {"type": "reset", "pos": current}
        assert await sse_events(sse, 1) == [reset]
        assert await ws_events(ws, 1) == [reset]
        sent = await api.send(alice, bob.id, "two")
        expected = {"type": "message", "pos": current + 1, "message": sent}
        assert await sse_events(sse, 1) == [expected]
        assert await ws_events(ws, 1) == [expected]


async def test_a_position_older_than_what_is_kept_is_a_reset(database_url: str) -> None:
    """Events recorded under the default retention; the next start, with a retention of a
    few microseconds, forgets them (the purge runs at start-up): resuming from before them
    starts with a reset, while the events recorded afterwards stay resumable."""
    async with serving(Settings(database_url=database_url)) as first, client_for(first) as api:
        alice, bob = await api.signup(), await api.signup()
        for i in range(3):
            await api.send(alice, bob.id, f"old {i}")
        await mark_read(api, bob, alice.id, 10**12)
        old = await events_after(api, bob, 0)
        assert [e["pos"] for e in old] == [1, 2, 3, 4]

    forgetful = Settings(database_url=database_url, event_retention_days=1e-10)
    async with serving(forgetful) as server, client_for(server) as api:

        async def forgotten() -> bool:
            return bool((await poll(api, bob, since=0))["reset"])

        await wait_until(forgotten, what="the start-up purge")
        for since in (0, 1, 3):
            assert await poll(api, bob, since=since) == {
                "events": [],
                "next": 4,
                "reset": True,
            }
            assert (await poll(api, bob, since=since, wait=5))["reset"] is True
        # At the current position nothing is missing: no reset.
        assert await poll(api, bob, since=4) == {"events": [], "next": 4, "reset": False}

        async with (
            open_sse(api.client, bob, since=1) as sse,
            open_ws(server, bob, "since=0") as ws,
            open_sse(api.client, bob, headers={"Last-Event-ID": "2"}) as by_header,
        ):
            for reader in (sse, by_header):
                assert await sse_events(reader, 1) == [{"type": "reset", "pos": 4}]
            assert await ws_events(ws, 1) == [{"type": "reset", "pos": 4}]
            new = await api.send(alice, bob.id, "new")
            expected = {"type": "message", "pos": 5, "message": new}
            for reader in (sse, by_header):
                assert await sse_events(reader, 1) == [expected]
            assert await ws_events(ws, 1) == [expected]

        # What was recorded after the purge is kept; from before it, still a reset.
        assert await poll(api, bob, since=4) == {
            "events": [expected],
            "next": 5,
            "reset": False,
        }
        assert (await poll(api, bob, since=3))["reset"] is True
        async with open_ws(server, bob, "since=4") as ws:
            assert await ws_events(ws, 1) == [expected]


async def test_a_commit_while_a_caught_up_stream_starts_is_not_a_reset(
    postgres_server_app: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client reconnecting at its current position while a message commits: the stream's
    first reads (its events after the position, and the current position) may straddle
    that commit, and must still not mistake it for a gap. The server runs in this process,
    so the current-position read can be held until the message is committed, which makes
    the interleaving certain rather than lucky. PostgreSQL only: there each statement
    outside a transaction has a snapshot of its own (SQLite's reads of one loop turn share
    one, and a real read never yields inside it)."""
    server = postgres_server_app
    async with client_for(server) as api:
        await _commit_while_a_caught_up_stream_starts(server, api, monkeypatch)


async def _commit_while_a_caught_up_stream_starts(
    server: LiveServer, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await api.signup(), await api.signup()
    await api.send(alice, bob.id, "before")
    since = await current_pos(api, bob)
    reached, go = threading.Event(), threading.Event()
    real = store.current_event_pos

    async def held(conn: Any, user_id: int) -> int:
        if user_id == bob.id and not reached.is_set():
            reached.set()
            await asyncio.to_thread(go.wait, TIMEOUT)
        return await real(conn, user_id)

    monkeypatch.setattr(store, "current_event_pos", held)
    async with open_ws(server, bob, f"since={since}") as ws:
        assert await asyncio.to_thread(reached.wait, TIMEOUT), "the stream never started"
        sent = await api.send(alice, bob.id, "during")
        go.set()
        assert await ws_events(ws, 1) == [{"type": "message", "pos": since + 1, "message": sent}]


# ------------------------------------------------------------------ concurrency


async def test_concurrent_senders_on_postgresql_a_polling_reader_never_skips(
    postgres_server_app: LiveServer,
) -> None:
    """Several users send to bob at once (and bob marks read meanwhile) through a real
    server on PostgreSQL, while bob resumes ``/events`` from his last position in a loop
    and an SSE stream follows too: positions come dense, each message exactly once."""
    async with client_for(postgres_server_app) as api:
        bob = await api.signup()
        senders = list(await asyncio.gather(*(api.signup() for _ in range(6))))
        start = await current_pos(api, bob)
        per_sender = 15
        finished = asyncio.Event()
        final: list[int] = []

        async def send_all(sender: User) -> list[int]:
            ids = []
            for i in range(per_sender):
                ids.append((await api.send(sender, bob.id, f"{sender.id}:{i}"))["id"])
                if i % 5 == 4:
                    await mark_read(api, bob, sender.id, ids[-1])
            return ids

        async def reader(limit: int) -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            cursor = start
            while not (finished.is_set() and cursor >= final[0]):
                page = await poll(api, bob, since=cursor, wait=1, limit=limit)
                assert page["reset"] is False
                positions = [e["pos"] for e in page["events"]]
                assert positions == list(range(cursor + 1, cursor + 1 + len(positions)))
                assert page["next"] == cursor + len(positions)
                seen += page["events"]
                cursor = page["next"]
            return seen

        async with open_sse(api.client, bob, since=start) as sse:
            readers = [asyncio.create_task(reader(limit)) for limit in (7, 100)]
            batches = await asyncio.gather(*(send_all(s) for s in senders))
            final.append(await current_pos(api, bob))
            finished.set()
            polled = await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
            streamed = await sse_events(sse, final[0] - start)

        sent = sorted(i for batch in batches for i in batch)
        everything = await events_after(api, bob, start)
        assert [e["pos"] for e in everything] == list(range(start + 1, final[0] + 1))
        for seen in (*polled, streamed):
            assert seen == everything
            ids = [e["message"]["id"] for e in seen if e["type"] == "message"]
            assert sorted(ids) == sent  # every message exactly once
            assert ids == sorted(ids)  # and in id order for bob
