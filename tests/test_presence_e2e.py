"""Typing and presence across two ``chatserver serve`` processes sharing PostgreSQL and Redis.

A user's streams may be on either node, and so may their peers': presence changes are
announced once (whichever node sees them) and reach the peers' streams on every node;
the typing window is shared through Redis. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from testinfra.postgres import PostgresServer
from testinfra.redis import RedisServer
from testinfra.server import ServerProcess, running_server
from tests.helpers import Api, User, assert_utc_timestamp
from tests.realtime_helpers import (
    TIMEOUT,
    before_marker,
    presence_of,
    ready_stream,
    send_frame_and_wait,
    until,
)

GRACE = 2.0


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    workdir: Path = tmp_path_factory.mktemp("presence-e2e")
    database = postgres_server.create_database()
    with redis.Redis.from_url(redis_server.url()) as client:
        client.flushall()
    env = {
        "CHAT_LOG_LEVEL": "warning",
        "CHAT_DATABASE_URL": postgres_server.url(database),
        "CHAT_REDIS_URL": redis_server.url(),
        "CHAT_PRESENCE_GRACE_SECONDS": str(GRACE),
        "CHAT_RATE_LIMITS": "off",
    }
    try:
        # One after the other: the first one migrates the shared database.
        with running_server(workdir, env) as a, running_server(workdir, env) as b:
            yield Cluster(a, b)
    finally:
        postgres_server.drop_database(database)


@contextlib.asynccontextmanager
async def apis(cluster: Cluster) -> AsyncIterator[tuple[Api, Api]]:
    async with (
        httpx.AsyncClient(base_url=cluster.a.base_url, timeout=30) as a,
        httpx.AsyncClient(base_url=cluster.b.base_url, timeout=30) as b,
    ):
        yield Api(a), Api(b)


async def signup(api: Api, count: int) -> list[User]:
    return list(await asyncio.gather(*(api.signup() for _ in range(count))))


async def test_presence_crosses_nodes_once_without_flicker(cluster: Cluster) -> None:
    async with apis(cluster) as (on_a, on_b):
        alice, bob, carol, warmer = await signup(on_a, 4)
        await on_a.send(alice, bob.id, "hi")
        await on_a.send(alice, carol.id, "hi")
        r = await on_a.client.put(f"/api/v1/blocks/{carol.id}", headers=alice.auth)
        assert r.status_code == 204
        async with (
            ready_stream(on_b, cluster.b.ws_url, bob, warmer) as bob_ws,
            ready_stream(on_a, cluster.a.ws_url, carol, warmer) as carol_ws,
        ):
            async with ready_stream(on_a, cluster.a.ws_url, alice, warmer):
                online, _ = await until(bob_ws, presence_of(alice))
                assert online["online"] is True
                assert_utc_timestamp(online["last_seen_at"])
            # Closed on A, open again on B within the grace period: no change to tell.
            async with ready_stream(on_b, cluster.b.ws_url, alice, warmer):
                assert await before_marker(on_a, bob_ws, warmer, bob, "presence") == []
            offline, _ = await until(bob_ws, presence_of(alice), within=GRACE + TIMEOUT)
            assert offline["online"] is False
            assert_utc_timestamp(offline["last_seen_at"])
            # Exactly one announcement per change, whichever node saw it.
            assert await before_marker(on_a, bob_ws, warmer, bob, "presence") == []
            # carol is blocked by alice: not one presence event of hers, on either node.
            assert await before_marker(on_b, carol_ws, warmer, carol, "presence") == []


async def test_typing_crosses_nodes_and_its_window_is_shared(cluster: Cluster) -> None:
    async with apis(cluster) as (on_a, on_b):
        alice, bob, warmer = await signup(on_a, 3)
        await on_a.send(alice, bob.id, "hi")
        async with (
            ready_stream(on_b, cluster.b.ws_url, bob, warmer) as bob_ws,
            ready_stream(on_b, cluster.b.ws_url, alice, warmer) as alice_ws,
        ):
            r = await on_a.client.post(f"/api/v1/conversations/{bob.id}/typing", headers=alice.auth)
            assert r.status_code == 204
            event, _ = await until(bob_ws, lambda e: e["type"] == "typing")
            assert event == {"type": "typing", "user_id": alice.id}
            # The same pair through the other node, inside the window: dropped.
            r = await on_b.client.post(f"/api/v1/conversations/{bob.id}/typing", headers=alice.auth)
            assert r.status_code == 204
            await send_frame_and_wait(alice_ws, {"type": "typing", "to": bob.id})
            assert await before_marker(on_a, bob_ws, warmer, bob, "typing") == []
