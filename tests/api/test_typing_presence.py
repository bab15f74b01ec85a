"""Ephemeral events on one node: typing (POST and the WebSocket frame, one per pair per
window, dropped for a blocker) and presence (online on the first stream, offline a grace
period after the last, no flicker on a reconnect, nothing to a blocked user).

A real server (uvicorn in a thread) on each database, with a short grace period. Whether
something was *not* delivered is checked with a marker: a message sent afterwards arrives
after anything published before it, so the events before the marker are all there were.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from chatserver.config import Settings
from testinfra.postgres import PostgresServer
from tests.helpers import NO_LIMITS, Api, User, assert_401, assert_problem, assert_utc_timestamp
from tests.realtime_helpers import (
    TIMEOUT,
    LiveServer,
    before_marker,
    open_sse,
    open_stream,
    presence_of,
    ready_stream,
    send_frame_and_wait,
    serve_in_thread,
    until,
)

GRACE = 2.0


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ephemeral') / 'chat.db'}"
        with serve_in_thread(
            Settings(database_url=url, presence_grace_seconds=GRACE, **NO_LIMITS)
        ) as live:
            yield live
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    name = postgres.create_database()
    try:
        settings = Settings(
            database_url=postgres.url(name), presence_grace_seconds=GRACE, **NO_LIMITS
        )
        with serve_in_thread(settings) as live:
            yield live
    finally:
        postgres.drop_database(name)


@pytest.fixture
async def api(server: LiveServer) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield Api(client)


@pytest.fixture
async def users(api: Api) -> list[User]:
    """alice, bob, carol and a warmer (who proves streams live, see `ready_stream`)."""
    return list(await asyncio.gather(*(api.signup() for _ in range(4))))


async def typing(api: Api, user: User, to: int) -> httpx.Response:
    return await api.client.post(f"/api/v1/conversations/{to}/typing", headers=user.auth)


# ------------------------------------------------------------------ typing


async def test_typing_is_relayed_once_per_window_without_a_position(
    server: LiveServer, api: Api, users: list[User]
) -> None:
    alice, bob, _, warmer = users
    await api.send(alice, bob.id, "hi")
    async with (
        open_stream(server.ws_url, alice.token) as alice_ws,
        ready_stream(api, server.ws_url, bob, warmer) as bob_ws,
    ):
        r = await typing(api, alice, bob.id)
        assert r.status_code == 204, r.text
        event, _ = await until(bob_ws, lambda e: e["type"] == "typing")
        assert event == {"type": "typing", "user_id": alice.id}
        assert "pos" not in event

        # Within the window: accepted, dropped (by POST and by the WebSocket frame).
        assert (await typing(api, alice, bob.id)).status_code == 204
        await send_frame_and_wait(alice_ws, {"type": "typing", "to": bob.id})
        assert await before_marker(api, bob_ws, warmer, bob, "typing") == []

        # Once the window has passed, the next one is relayed again (bounded retries).
        deadline = time.monotonic() + 3 * TIMEOUT
        relayed: list[dict[str, Any]] = []
        while not relayed:
            assert time.monotonic() < deadline, "typing was never relayed again"
            assert (await typing(api, alice, bob.id)).status_code == 204
            relayed = await before_marker(api, bob_ws, warmer, bob, "typing")
        assert relayed == [{"type": "typing", "user_id": alice.id}]


async def test_typing_over_sse_has_no_id_so_resuming_is_unchanged(
    api: Api, users: list[User]
) -> None:
    alice, bob, _, warmer = users
    await api.send(alice, bob.id, "hi")
    warm = await api.send(warmer, bob.id, "warm-up")
    async with open_sse(api.client, bob, after_id=warm["id"] - 1) as sse:
        position, _ = await sse.message()  # the stream is live
        assert (await typing(api, alice, bob.id)).status_code == 204
        event = await sse.next(ephemeral=True)
        assert event.json() == {"type": "typing", "user_id": alice.id}
        assert event.id is None  # Last-Event-ID stays at the last position
        assert position is not None


async def test_the_websocket_typing_frame_relays_and_reports_errors(
    server: LiveServer, api: Api, users: list[User]
) -> None:
    alice, bob, carol, warmer = users
    await api.send(bob, alice.id, "hi")
    async with (
        ready_stream(api, server.ws_url, bob, warmer) as bob_ws,
        ready_stream(api, server.ws_url, alice, warmer) as alice_ws,
    ):
        await alice_ws.send(json.dumps({"type": "typing", "to": bob.id}))
        event, _ = await until(bob_ws, lambda e: e["type"] == "typing")
        assert event == {"type": "typing", "user_id": alice.id}

        for frame, code in [
            ({"type": "typing", "to": carol.id}, "not-found"),  # no conversation
            ({"type": "typing", "to": 999_999_999}, "not-found"),  # no such user
            ({"type": "typing", "to": 0}, "unsupported-frame"),
            ({"type": "typing"}, "unsupported-frame"),
            ({"type": "dance"}, "unsupported-frame"),
        ]:
            await alice_ws.send(json.dumps(frame))
            error, _ = await until(alice_ws, lambda e: e["type"] == "error")
            assert error["code"] == code, (frame, error)
            assert error["detail"]


async def test_typing_to_a_blocker_is_accepted_and_dropped(
    server: LiveServer, api: Api, users: list[User]
) -> None:
    alice, bob, _, warmer = users
    await api.send(alice, bob.id, "hi")
    r = await api.client.put(f"/api/v1/blocks/{alice.id}", headers=bob.auth)
    assert r.status_code == 204
    async with ready_stream(api, server.ws_url, bob, warmer) as bob_ws:
        assert (await typing(api, alice, bob.id)).status_code == 204
        assert await before_marker(api, bob_ws, warmer, bob, "typing") == []
        # The blocker can still type to the blocked user.
        async with ready_stream(api, server.ws_url, alice, warmer) as alice_ws:
            assert (await typing(api, bob, alice.id)).status_code == 204
            event, _ = await until(alice_ws, lambda e: e["type"] == "typing")
            assert event == {"type": "typing", "user_id": bob.id}


async def test_bad_typing_requests_are_problems(api: Api, users: list[User]) -> None:
    alice, bob, carol, _ = users
    await api.send(alice, bob.id, "hi")
    problem = assert_problem(await typing(api, alice, carol.id), 404)
    assert problem["detail"] == "You have no conversation with that user"
    assert_problem(await typing(api, alice, 999_999_999), 404)
    assert_problem(await typing(api, alice, 0), 400, "user_id")
    r = await api.client.post("/api/v1/conversations/abc/typing", headers=alice.auth)
    assert 400 <= r.status_code < 500
    assert_401(await api.client.post(f"/api/v1/conversations/{bob.id}/typing"))
    assert (await typing(api, alice, alice.id)).status_code == 204  # to yourself: dropped


# ------------------------------------------------------------------ presence


async def test_presence_online_then_offline_after_the_grace_without_flicker(
    server: LiveServer, api: Api, users: list[User]
) -> None:
    alice, bob, carol, warmer = users
    await api.send(alice, bob.id, "hi")
    async with ready_stream(api, server.ws_url, bob, warmer) as bob_ws:
        async with ready_stream(api, server.ws_url, alice, warmer):
            online, _ = await until(bob_ws, presence_of(alice))
        assert online["online"] is True
        assert "pos" not in online
        assert_utc_timestamp(online["last_seen_at"])
        # A reconnect within the grace period: no offline, no second online.
        async with ready_stream(api, server.ws_url, alice, warmer):
            pass
        offline, _ = await until(bob_ws, presence_of(alice), within=GRACE + TIMEOUT)
        assert offline == {
            "type": "presence",
            "user_id": alice.id,
            "online": False,
            "last_seen_at": offline["last_seen_at"],
        }
        assert assert_utc_timestamp(offline["last_seen_at"]) >= assert_utc_timestamp(
            online["last_seen_at"]
        )
        assert await before_marker(api, bob_ws, warmer, bob, "presence") == []
        # carol, with no conversation with alice, hears nothing of her.
        async with (
            ready_stream(api, server.ws_url, carol, warmer) as carol_ws,
            ready_stream(api, server.ws_url, alice, warmer),
        ):
            await until(bob_ws, presence_of(alice))
            assert await before_marker(api, carol_ws, warmer, carol, "presence") == []


async def test_a_blocked_user_gets_no_presence_of_the_blocker(
    server: LiveServer, api: Api, users: list[User]
) -> None:
    alice, bob, carol, warmer = users
    await api.send(alice, bob.id, "hi")
    await api.send(alice, carol.id, "hi")
    async with (
        ready_stream(api, server.ws_url, bob, warmer) as bob_ws,
        ready_stream(api, server.ws_url, carol, warmer) as carol_ws,
    ):
        r = await api.client.put(f"/api/v1/blocks/{bob.id}", headers=alice.auth)
        assert r.status_code == 204
        # The block tells bob's streams at once what he sees from now on.
        hidden, _ = await until(bob_ws, presence_of(alice))
        assert hidden == {
            "type": "presence",
            "user_id": alice.id,
            "online": False,
            "last_seen_at": None,
        }

        async with ready_stream(api, server.ws_url, alice, warmer):
            # One notice goes to the whole audience: once carol has it, bob would too.
            assert (await until(carol_ws, presence_of(alice)))[0]["online"] is True
            assert await before_marker(api, bob_ws, warmer, bob, "presence") == []

            r = await api.client.delete(f"/api/v1/blocks/{bob.id}", headers=alice.auth)
            assert r.status_code == 204
            shown, _ = await until(bob_ws, presence_of(alice))
            assert shown["online"] is True
            assert_utc_timestamp(shown["last_seen_at"])
        assert (await until(bob_ws, presence_of(alice), within=GRACE + TIMEOUT))[0]["online"] is (
            False
        )
