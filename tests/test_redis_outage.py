"""A Redis outage under two real ``chatserver serve`` nodes sharing one PostgreSQL database.

While Redis is down, sends, read marks and reads keep working and ``/healthz`` says
``"redis": "down"`` with a 200. When it is back (same port), every open stream on every
node delivers everything that happened meanwhile, in position order, exactly once, without
the client doing anything; a stream opened during the outage replays from the database and
goes live once Redis is back.

The Redis here is the module's own (stopping the session's would disturb other tests).
Every wait is bounded and waits for an event or a state, never for time to pass.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from testinfra.postgres import PostgresServer
from testinfra.redis import RedisServer
from testinfra.server import ServerProcess, running_server
from tests.helpers import Api, User
from tests.realtime_helpers import TIMEOUT, SseReader, next_event, open_sse, wait_until

QUIET = {"CHAT_LOG_LEVEL": "warning"}
CATCH_UP_SECONDS = 15.0  # the contract says 5 s; the bound here leaves room on a busy machine


@dataclass
class Cluster:
    one: ServerProcess
    two: ServerProcess
    redis: RedisServer


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Two nodes (uvicorn and granian) on one database and this module's own Redis."""
    workdir = tmp_path_factory.mktemp("redis-outage")
    redis = RedisServer(Path(workdir), redis_server.executable)
    database = postgres_server.create_database()
    env = {
        **QUIET,
        "CHAT_DATABASE_URL": postgres_server.url(database),
        "CHAT_REDIS_URL": redis.url(),
    }
    try:
        with (
            redis,
            running_server(workdir, env) as one,  # the first one migrates
            running_server(workdir, env, ["--server", "granian"]) as two,
        ):
            yield Cluster(one, two, redis)
    finally:
        postgres_server.drop_database(database)


@pytest.fixture
def redis(cluster: Cluster) -> Iterator[RedisServer]:
    """The cluster's Redis, running again after each test whatever happened."""
    try:
        yield cluster.redis
    finally:
        if cluster.redis.managed is None:
            cluster.redis.start()


@contextlib.asynccontextmanager
async def api_for(server: ServerProcess) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield Api(client)  # type: ignore[arg-type]


# ------------------------------------------------------------------ helpers


async def position(api: Api, user: User) -> int:
    r = await api.get("/api/v1/events", user)
    assert r.status_code == 200, r.text
    pos: int = r.json()["next"]
    return pos


async def stored_events(api: Api, user: User, since: int) -> list[dict[str, Any]]:
    """Every stored event after ``since`` (what a stream must have delivered)."""
    r = await api.get("/api/v1/events", user, since=since, limit=500)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["reset"] is False
    events: list[dict[str, Any]] = page["events"]
    return events


async def mark_read(api: Api, user: User, peer_id: int, up_to_id: int) -> dict[str, Any]:
    r = await api.client.post(
        f"/api/v1/conversations/{peer_id}/read", json={"up_to_id": up_to_id}, headers=user.auth
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def redis_state(server: ServerProcess) -> str:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        r = await client.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["database"]) == ("ok", "up"), body
    state: str = body["redis"]
    return state


async def wait_redis(cluster: Cluster, state: str) -> None:
    for node in (cluster.one, cluster.two):

        async def reported(node: ServerProcess = node) -> bool:
            return await redis_state(node) == state

        await wait_until(reported, within=CATCH_UP_SECONDS, what=f"{node.base_url}: redis {state}")


class Stream:
    """A WebSocket or SSE stream, read one decoded event at a time."""

    def __init__(self, ws: ClientConnection | None = None, sse: SseReader | None = None) -> None:
        self.ws = ws
        self.sse = sse

    async def next(self, within: float) -> dict[str, Any]:
        if self.ws is not None:
            return await next_event(self.ws, within)  # ephemeral events (presence) skipped
        assert self.sse is not None
        raw = await self.sse.next(within)
        event = raw.json()
        assert raw.id == str(event["pos"])
        return event

    async def take(self, count: int, within: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        return [await self.next(max(deadline - time.monotonic(), 0.001)) for _ in range(count)]


@contextlib.asynccontextmanager
async def ws_stream(server: ServerProcess, user: User, since: int) -> AsyncIterator[Stream]:
    url = f"{server.ws_url}/api/v1/stream?since={since}"
    async with websockets.connect(url, additional_headers=user.auth, open_timeout=TIMEOUT) as ws:
        yield Stream(ws=ws)


@contextlib.asynccontextmanager
async def sse_stream(api: Api, user: User, since: int) -> AsyncIterator[Stream]:
    async with open_sse(api.client, user, since=since) as reader:
        yield Stream(sse=reader)


# ------------------------------------------------------------------ tests


async def test_open_streams_on_both_nodes_deliver_what_happened_during_the_outage(
    cluster: Cluster, redis: RedisServer
) -> None:
    async with api_for(cluster.one) as on_one, api_for(cluster.two) as on_two:
        alice, bob = await on_one.signup(), await on_one.signup()
        first = await on_two.send(alice, bob.id, "before the outage")
        since = {alice.id: await position(on_one, alice), bob.id: await position(on_one, bob)}
        async with (
            ws_stream(cluster.one, bob, since[bob.id]) as bob_on_one,
            sse_stream(on_two, bob, since[bob.id]) as bob_on_two,
            ws_stream(cluster.two, alice, since[alice.id]) as alice_on_two,
        ):
            streams = {bob.id: [bob_on_one, bob_on_two], alice.id: [alice_on_two]}
            # Live through Redis before it goes: a message crossing nodes reaches them all.
            warm = await on_two.send(alice, bob.id, "warm-up")
            for user_id, user_streams in streams.items():
                for stream in user_streams:
                    event = await stream.next(TIMEOUT)
                    assert (event["pos"], event["message"]) == (since[user_id] + 1, warm)

            redis.stop()
            await wait_redis(cluster, "down")
            during = [(await on_two.send(alice, bob.id, f"during {i}"))["id"] for i in range(4)]
            marked = await mark_read(on_one, bob, alice.id, during[1])
            assert (marked["last_read_id"], marked["unread_count"]) == (during[1], 2)
            during.append((await on_one.send(bob, alice.id, "reply during"))["id"])
            r = await on_two.get("/api/v1/conversations/", alice)
            assert r.status_code == 200, r.text

            redis.start()  # the same port
            for user_id, user_streams in streams.items():
                user = bob if user_id == bob.id else alice
                expected = (await stored_events(on_one, user, since[user_id]))[1:]
                kinds = [e["type"] for e in expected]
                assert kinds == ["message"] * 4 + ["read", "message"], kinds
                assert [e["message"]["id"] for e in expected if e["type"] == "message"] == during
                for stream in user_streams:
                    assert await stream.take(len(expected), CATCH_UP_SECONDS) == expected

            # Nothing twice: the next event on every stream is the next new one.
            await wait_redis(cluster, "up")
            after = await on_one.send(bob, alice.id, "after the outage")
            for user_id, user_streams in streams.items():
                user = bob if user_id == bob.id else alice
                [expected_after] = await stored_events(
                    on_one, user, await position(on_one, user) - 1
                )
                assert expected_after["message"] == after
                for stream in user_streams:
                    assert await stream.next(CATCH_UP_SECONDS) == expected_after
        assert first["id"] < warm["id"]


async def test_a_stream_opened_during_the_outage_replays_then_goes_live(
    cluster: Cluster, redis: RedisServer
) -> None:
    async with api_for(cluster.one) as on_one, api_for(cluster.two) as on_two:
        alice, bob = await on_one.signup(), await on_one.signup()
        await on_two.send(alice, bob.id, "before the outage")
        since = await position(on_one, bob)

        redis.stop()
        await wait_redis(cluster, "down")
        missed = [await on_two.send(alice, bob.id, f"missed {i}") for i in range(3)]
        async with (
            ws_stream(cluster.one, bob, since) as ws,
            sse_stream(on_one, bob, since) as sse,
        ):
            replayed = await stored_events(on_one, bob, since)
            assert [e["message"] for e in replayed] == missed
            for stream in (ws, sse):
                assert await stream.take(len(missed), TIMEOUT) == replayed
            # Sent while the stream is open and Redis still down: it arrives once Redis is back.
            late = await on_two.send(alice, bob.id, "while the stream waits")
            await mark_read(on_two, bob, alice.id, late["id"])

            redis.start()
            expected = await stored_events(on_one, bob, since + len(missed))
            assert [e["type"] for e in expected] == ["message", "read"]
            for stream in (ws, sse):
                assert await stream.take(2, CATCH_UP_SECONDS) == expected

            await wait_redis(cluster, "up")
            live = await on_two.send(alice, bob.id, "live again")
            for stream in (ws, sse):
                event = await stream.next(CATCH_UP_SECONDS)
                assert event == {"type": "message", "pos": expected[-1]["pos"] + 1, "message": live}
