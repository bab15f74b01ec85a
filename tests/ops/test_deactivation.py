"""Deactivating a user with the command line while real servers run: no login, no token, shown
to others as deleted, messages kept, open streams closed (4401) on every node — a lone SQLite
server hears of it from the database, nodes on Redis from the API's own revoke event too."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import websockets

from chatserver.events import CONTROL_CHANNEL
from testinfra.server import ServerProcess, running_server
from tests.helpers import PASSWORD
from tests.ops.conftest import chatserver
from tests.realtime_helpers import CLOSE_AUTH, SseReader, next_message, read_until_closed

# The streams close within a second of the command (docs/deploy.md); a loaded test machine
# gets some slack on top.
CLOSE_WITHIN = 3.0


async def signup(client: httpx.AsyncClient, name: str) -> tuple[int, str]:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    r = await client.post("/api/v1/users/", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"], await login(client, name)


async def login(client: httpx.AsyncClient, name: str) -> str:
    r = await client.post("/api/v1/auth/token/", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def cli(*args: str, env: dict[str, str], cwd: Path) -> Any:
    result = await asyncio.to_thread(chatserver, *args, "--json", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_a_deactivated_user_is_locked_out_hidden_and_kept(
    database_url: str, tmp_path: Path
) -> None:
    env = {"CHAT_DATABASE_URL": database_url}
    with running_server(tmp_path, env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            await _deactivate_and_reactivate(client, server, env, tmp_path)


async def _deactivate_and_reactivate(
    client: httpx.AsyncClient, server: ServerProcess, env: dict[str, str], cwd: Path
) -> None:
    alice_id, alice = await signup(client, "alice")
    bob_id, bob = await signup(client, "bob")
    to_alice = await client.post(
        "/api/v1/chats/", json={"user_id": alice_id, "message": "hi alice"}, headers=bearer(bob)
    )
    from_alice = await client.post(
        "/api/v1/chats/", json={"user_id": bob_id, "message": "hi bob"}, headers=bearer(alice)
    )
    assert to_alice.status_code == from_alice.status_code == 201
    sse_headers = {**bearer(alice), "Accept": "text/event-stream"}
    async with (
        websockets.connect(
            f"{server.ws_url}/api/v1/stream?since=0", additional_headers=bearer(alice)
        ) as ws,
        client.stream("GET", "/api/v1/stream?since=0", headers=sse_headers) as sse,
    ):
        assert (await next_message(ws))["message"] == "hi alice"  # the stream is live
        events = SseReader(sse)
        assert (await events.message())[1]["message"] == "hi alice"
        await cli("users", "deactivate", "alice", env=env, cwd=cwd)
        code, _ = await read_until_closed(ws, CLOSE_WITHIN)
        assert code == CLOSE_AUTH
        async with asyncio.timeout(CLOSE_WITHIN):
            while True:  # the SSE stream ends (keep-alive comments may come before)
                try:
                    await events.next(CLOSE_WITHIN)
                except EOFError:
                    break
    await _looks_deleted(client, alice_id, alice, bob)
    await cli("users", "reactivate", "alice", env=env, cwd=cwd)
    token = await login(client, "alice")
    seen = await client.get("/api/v1/users/", params={"user_id": alice_id}, headers=bearer(bob))
    assert seen.status_code == 200
    inbox = await client.get("/api/v1/chats/", headers=bearer(token))
    assert [m["message"] for m in inbox.json()["messages"]] == ["hi alice"]


async def _looks_deleted(client: httpx.AsyncClient, alice_id: int, alice: str, bob: str) -> None:
    """Alice cannot get in; Bob sees her as deleted; her message to Bob is still there."""
    r = await client.post("/api/v1/auth/token/", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 401
    assert (await client.get("/api/v1/users/", headers=bearer(alice))).status_code == 401
    for params in ({"user_id": alice_id}, {"username": "alice"}):
        assert (
            await client.get("/api/v1/users/", params=params, headers=bearer(bob))
        ).status_code == 404
    conversation = await client.get(f"/api/v1/conversations/{alice_id}/", headers=bearer(bob))
    assert conversation.status_code == 200
    assert conversation.json()["user"] is None
    sent = await client.post(
        "/api/v1/chats/", json={"user_id": alice_id, "message": "?"}, headers=bearer(bob)
    )
    assert sent.status_code == 404
    inbox = await client.get("/api/v1/chats/", headers=bearer(bob))
    assert [m["message"] for m in inbox.json()["messages"]] == ["hi bob"]
    again = {"username": "alice", "email": "other@example.com", "password": PASSWORD}
    assert (await client.post("/api/v1/users/", json=again)).status_code == 409  # name kept


async def test_deactivating_closes_streams_on_every_node_through_redis(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {"CHAT_DATABASE_URL": postgres_url, "CHAT_REDIS_URL": redis_url}
    with running_server(tmp_path, env) as one, running_server(tmp_path, env) as two:
        async with httpx.AsyncClient(base_url=one.base_url, timeout=10) as client:
            alice_id, alice = await signup(client, "alice")
            note = {"user_id": alice_id, "message": "note to self"}
            assert (
                await client.post("/api/v1/chats/", json=note, headers=bearer(alice))
            ).is_success
        control = aioredis.Redis.from_url(redis_url)
        pubsub = control.pubsub()
        await pubsub.subscribe(CONTROL_CHANNEL)
        try:
            async with (
                websockets.connect(
                    f"{one.ws_url}/api/v1/stream?since=0", additional_headers=bearer(alice)
                ) as ws1,
                websockets.connect(
                    f"{two.ws_url}/api/v1/stream?since=0", additional_headers=bearer(alice)
                ) as ws2,
            ):
                for ws in (ws1, ws2):  # both streams are live (the replay came)
                    assert (await next_message(ws))["message"] == "note to self"
                await cli("users", "deactivate", "alice", env=env, cwd=tmp_path)
                codes = await asyncio.gather(
                    read_until_closed(ws1, CLOSE_WITHIN), read_until_closed(ws2, CLOSE_WITHIN)
                )
                assert [code for code, _ in codes] == [CLOSE_AUTH, CLOSE_AUTH]
            published = await _next_control_event(pubsub)
            assert published == {"type": "revoke", "user_id": alice_id, "token_hash": None}
        finally:
            await pubsub.aclose()
            await control.aclose()


async def _next_control_event(pubsub: Any) -> Any:
    """The command line published the API's revoke event on Redis."""
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                return json.loads(message["data"])
