"""Real-time delivery through real ``chatserver serve`` processes.

* one node on each HTTP server (granian, the default, and uvicorn with fast protocol pings),
  SQLite, no Redis;
* a two-node cluster sharing one PostgreSQL database and one Redis (the scale-out setup),
  plus a third node with ``--workers 2`` on the same database and Redis;
* ``--workers 2`` without Redis, which must be refused.

Servers start once per module. Every wait is bounded and waits for a frame or an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from testinfra.postgres import PostgresServer
from testinfra.procs import HOST, TCP_ESTABLISHED, tcp_connection
from testinfra.redis import RedisServer
from testinfra.server import (
    ServerProcess,
    connection_owner,
    running_server,
    serve_argv,
    server_env,
)
from tests.helpers import Api, User
from tests.realtime_helpers import (
    CLOSE_AUTH,
    CLOSE_PING_TIMEOUT,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWebSocket,
    message_events,
    message_ids,
    next_event,
    next_message,
    open_sse,
    open_stream,
    read_until_closed,
    ready_stream,
    refused,
    user_json,
    wait_online,
    wait_until,
)

# The stuck-reader test sends thousands of messages on purpose: these nodes run with the
# rate limits off (tests/api/test_limits.py tests them).
QUIET = {"CHAT_LOG_LEVEL": "warning", "CHAT_RATE_LIMITS": "off"}
PING = {"CHAT_WS_PING_INTERVAL": "0.5", "CHAT_WS_PING_TIMEOUT": "0.5"}
CROSS_NODE_SECONDS = 1.0  # the bound for a message or a revocation between nodes
EVICTION_SECONDS = 5.0  # a cached message evicted on another node


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("realtime-e2e")


# ------------------------------------------------------------------ single nodes


@pytest.fixture(scope="module")
def granian_node(workdir: Path) -> Iterator[ServerProcess]:
    env = {**QUIET, "CHAT_DATABASE_URL": f"sqlite:///{workdir / 'granian.db'}"}
    with running_server(workdir, env, ["--server", "granian"]) as server:
        yield server


@pytest.fixture(scope="module")
def uvicorn_node(workdir: Path) -> Iterator[ServerProcess]:
    env = {**QUIET, **PING, "CHAT_DATABASE_URL": f"sqlite:///{workdir / 'uvicorn.db'}"}
    with running_server(workdir, env, ["--server", "uvicorn"]) as server:
        yield server


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def node(request: pytest.FixtureRequest) -> ServerProcess:
    server: ServerProcess = request.getfixturevalue(f"{request.param}_node")
    return server


@contextlib.asynccontextmanager
async def api_for(server: ServerProcess) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield Api(client)


async def signup_many(api: Api, count: int) -> list[User]:
    """New users, signed up concurrently (password hashing dominates the set-up time)."""
    return list(await asyncio.gather(*(api.signup() for _ in range(count))))


async def test_live_delivery_over_websocket_and_sse(node: ServerProcess) -> None:
    async with api_for(node) as api:
        alice, bob, warmer = await signup_many(api, 3)
        async with ready_stream(api, node.ws_url, alice, warmer) as ws:
            warm = await api.send(warmer, alice.id, "sse warm-up")
            assert (await next_message(ws))["id"] == warm["id"]
            async with open_sse(api.client, alice, after_id=warm["id"] - 1) as sse:
                # SSE ids are positions: alice's second event, after the first warm-up.
                assert await sse.message() == ("2", warm)
                sent = await api.send(bob, alice.id, "hello")
                assert await next_event(ws) == {"type": "message", "pos": 3, "message": sent}
                assert await sse.message() == ("3", sent)


async def test_bad_token_is_refused_and_a_frame_over_64_kib_closes_with_1009(
    node: ServerProcess,
) -> None:
    assert await refused(node.ws_url, token="not-a-token") in ((CLOSE_AUTH, []), (401, []))
    async with api_for(node) as api:
        alice, warmer = await signup_many(api, 2)
        async with ready_stream(api, node.ws_url, alice, warmer) as ws:
            await ws.send("x" * (64 * 1024 + 1))
            assert await read_until_closed(ws) == (CLOSE_TOO_BIG, [])


async def test_revoking_a_token_closes_its_socket(node: ServerProcess) -> None:
    async with api_for(node) as api:
        alice, warmer = await signup_many(api, 2)
        async with ready_stream(api, node.ws_url, alice, warmer) as ws:
            r = await api.client.delete("/api/v1/auth/token/", headers=alice.auth)
            assert r.status_code == 204
            assert await read_until_closed(ws, within=1.0) == (CLOSE_AUTH, [])


async def test_a_stuck_reader_is_disconnected_and_can_resume(node: ServerProcess) -> None:
    """A client that stops reading (4 KiB receive window) while messages pour in is
    disconnected once its queue (1000 events) overflows, and resumes with after_id missing
    nothing. On granian the server also hangs up, although the close frame cannot reach
    such a client. uvicorn does not: its transports close only once unsent data drains
    (even after an unanswered ping), so the connection lasts until the client goes; its
    cost stays bounded by the socket buffers, and the stream itself has ended."""
    async with api_for(node) as api:
        alice, bob, warmer = await signup_many(api, 3)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((HOST, node.port))
        sock.setblocking(False)
        async with ready_stream(
            api, node.ws_url, alice, warmer, sock=sock, max_queue=1, compression=None
        ) as ws:
            text = secrets.token_hex(5000)  # the largest message, so the fewest are needed
            sent: list[int] = []
            while not sent or (await user_json(api, bob, alice.id))["online"]:
                assert len(sent) < 3000, "the stuck reader was never disconnected"
                batch = await asyncio.gather(*(api.send(bob, alice.id, text) for _ in range(50)))
                sent += sorted(m["id"] for m in batch)
            if node.http_server == "granian":
                client_port = ws.local_address[1]

                async def server_hung_up() -> bool:
                    connection = tcp_connection(node.port, client_port)
                    return connection is None or connection[0] != TCP_ESTABLISHED

                await wait_until(server_hung_up, within=15, what="the server to hang up")
            code, frames = await read_until_closed(ws, within=30)
        # 1013 when the close frame made it out; none (abnormal closure) when it could not;
        # on uvicorn (0.5 s pings here), its ping timeout's 1011 may be queued first.
        allowed = {CLOSE_TRY_AGAIN, None}
        if node.http_server == "uvicorn":
            allowed.add(CLOSE_PING_TIMEOUT)
        assert code in allowed
        delivered = [json.loads(frame)["message"]["id"] for frame in frames]
        assert delivered == sent[: len(delivered)]
        async with open_stream(node.ws_url, alice.token, after_id=delivered[-1]) as again:
            rest = await message_ids(again, len(sent) - len(delivered), within=30)
        assert delivered + rest == sent


# ------------------------------------------------------------------ protocol pings (uvicorn)


async def test_a_client_that_answers_pings_stays_connected(uvicorn_node: ServerProcess) -> None:
    async with api_for(uvicorn_node) as api:
        alice, bob = await signup_many(api, 2)
        raw = await RawWebSocket.connect(uvicorn_node.port, "/api/v1/stream", alice.auth)
        try:
            pings = 0
            while pings < 4:  # four rounds of 0.5 s interval + 0.5 s timeout, each answered
                frame = await raw.read_frame()
                assert frame.opcode in (OP_PING, OP_TEXT), frame
                if frame.opcode == OP_PING:
                    pings += 1
                    await raw.send_frame(OP_PONG, frame.payload)
            sent = await api.send(bob, alice.id, "are you there?")
            while (frame := await raw.read_frame()).opcode != OP_TEXT:
                assert frame.opcode == OP_PING, frame
                await raw.send_frame(OP_PONG, frame.payload)
            assert json.loads(frame.payload) == {"type": "message", "pos": 1, "message": sent}
            assert (await user_json(api, bob, alice.id))["online"] is True
        finally:
            await raw.close()


async def test_a_client_that_never_answers_pings_is_closed(uvicorn_node: ServerProcess) -> None:
    async with api_for(uvicorn_node) as api:
        alice, bob = await signup_many(api, 2)
        raw = await RawWebSocket.connect(uvicorn_node.port, "/api/v1/stream", alice.auth)
        try:
            await wait_online(api, bob, alice.id, True)
            # Neither read nor answered: the server must notice and close the socket.
            await wait_online(api, bob, alice.id, False, within=10)
            frames = await raw.read_to_eof()
            assert {f.opcode for f in frames} <= {OP_PING, OP_CLOSE}
            assert [f.close_code for f in frames if f.opcode == OP_CLOSE] == [CLOSE_PING_TIMEOUT]
        finally:
            await raw.close()


# ------------------------------------------------------------------ workers


def test_workers_2_without_redis_is_refused_with_one_line(workdir: Path) -> None:
    env = server_env({"CHAT_DATABASE_URL": f"sqlite:///{workdir / 'refused.db'}"})
    result = subprocess.run(
        serve_argv(8765, ["--workers", "2"]),
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "CHAT_REDIS_URL" in lines[0]
    assert not (workdir / "refused.db").exists()  # refused before touching anything


# ------------------------------------------------------------------ scale-out


@dataclass
class Cluster:
    """Two nodes sharing one PostgreSQL database and one Redis: ``a`` runs uvicorn (the
    default), ``b`` granian."""

    a: ServerProcess
    b: ServerProcess
    env: dict[str, str]


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer, redis_server: RedisServer, workdir: Path
) -> Iterator[Cluster]:
    database = postgres_server.create_database()
    with redis.Redis.from_url(redis_server.url()) as client:
        client.flushall()
    env = {
        **QUIET,
        "CHAT_DATABASE_URL": postgres_server.url(database),
        "CHAT_REDIS_URL": redis_server.url(),
    }
    try:
        # One after the other: the first one migrates the shared database. One node on
        # each HTTP server: the default (uvicorn), and granian.
        with (
            running_server(workdir, env) as a,
            running_server(workdir, env, ["--server", "granian"]) as b,
        ):
            yield Cluster(a, b, env)
    finally:
        postgres_server.drop_database(database)


async def test_a_message_posted_on_one_node_reaches_a_stream_on_the_other(
    cluster: Cluster,
) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, bob, warmer = await signup_many(on_a, 3)
        async with (
            ready_stream(on_b, cluster.b.ws_url, alice, warmer) as alice_on_b,
            ready_stream(on_a, cluster.a.ws_url, bob, warmer) as bob_on_a,
        ):
            sent = await on_a.send(bob, alice.id, "from node A")
            assert await next_message(alice_on_b, within=CROSS_NODE_SECONDS) == sent
            assert await next_message(bob_on_a, within=CROSS_NODE_SECONDS) == sent
            reply = await on_b.send(alice, bob.id, "from node B")
            assert await next_message(bob_on_a, within=CROSS_NODE_SECONDS) == reply
            assert await next_message(alice_on_b, within=CROSS_NODE_SECONDS) == reply


async def test_concurrent_senders_on_both_nodes_arrive_once_and_in_id_order(
    cluster: Cluster,
) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, warmer, *senders = await signup_many(on_a, 8)
        async with ready_stream(on_b, cluster.b.ws_url, alice, warmer) as ws:

            async def send(api: Api, user: User) -> list[int]:
                return [(await api.send(user, alice.id, f"{i}"))["id"] for i in range(15)]

            apis = (on_a, on_b)
            batches = await asyncio.gather(
                *(send(apis[i % 2], user) for i, user in enumerate(senders))
            )
            sent = sorted(itertools.chain.from_iterable(batches))
            # Ordered, so that resuming from the highest id seen can never skip one; and
            # at dense positions in the same order (the warm-up was alice's position 1).
            events = await message_events(ws, len(sent), within=30)
            assert [e["message"]["id"] for e in events] == sent
            assert [e["pos"] for e in events] == list(range(2, len(sent) + 2))
            marker = await on_a.send(warmer, alice.id, "marker")
            assert await message_ids(ws, 1) == [marker["id"]]  # nothing twice


async def test_resume_on_another_node_replays_what_was_sent_meanwhile(cluster: Cluster) -> None:
    async with api_for(cluster.a) as on_a:
        alice, bob, warmer = await signup_many(on_a, 3)
        async with ready_stream(on_a, cluster.a.ws_url, alice, warmer) as ws:
            seen = await on_a.send(bob, alice.id, "seen on A")
            assert (await next_message(ws))["id"] == seen["id"]
        missed = [(await on_a.send(bob, alice.id, f"missed {i}"))["id"] for i in range(3)]
        async with open_stream(cluster.b.ws_url, alice.token, after_id=seen["id"]) as ws:
            assert [(await next_message(ws))["id"] for _ in missed] == missed
            live = await on_a.send(bob, alice.id, "live")
            assert await next_message(ws, within=CROSS_NODE_SECONDS) == live
        # By position too: "seen" was alice's second event (after the warm-up).
        async with open_stream(cluster.b.ws_url, alice.token, since=2) as ws:
            events = [await next_event(ws) for _ in range(4)]
        assert [(e["pos"], e["message"]["id"]) for e in events] == [
            (3 + i, message_id) for i, message_id in enumerate([*missed, live["id"]])
        ]


async def test_long_poll_on_one_node_is_answered_by_a_message_posted_on_the_other(
    cluster: Cluster,
) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, bob = await signup_many(on_a, 2)
        first = await on_a.send(bob, alice.id, "first")
        poll = asyncio.create_task(on_b.inbox(alice, after_id=first["id"], wait=10))
        done, _ = await asyncio.wait({poll}, timeout=0.3)
        assert not done, "nothing newer exists: the request must be held"
        sent = await on_a.send(bob, alice.id, "second")
        page = await asyncio.wait_for(poll, timeout=15)
        assert [m["id"] for m in page["messages"]] == [sent["id"]]


async def test_revoking_on_one_node_closes_the_socket_on_the_other(cluster: Cluster) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, warmer = await signup_many(on_a, 2)
        async with ready_stream(on_b, cluster.b.ws_url, alice, warmer) as ws:
            r = await on_a.client.delete("/api/v1/auth/token/", headers=alice.auth)
            assert r.status_code == 204
            assert await read_until_closed(ws, within=CROSS_NODE_SECONDS) == (CLOSE_AUTH, [])
        # And the other node no longer accepts the token either (its cache was evicted).
        r = await on_b.client.get("/api/v1/users/", headers=alice.auth)
        assert r.status_code == 401


async def test_deleting_a_user_on_one_node_closes_their_socket_on_the_other(
    cluster: Cluster,
) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, warmer = await signup_many(on_a, 2)
        async with ready_stream(on_b, cluster.b.ws_url, alice, warmer) as ws:
            r = await on_a.client.delete("/api/v1/users/", headers=alice.auth)
            assert r.status_code == 204
            code, _ = await read_until_closed(ws, within=CROSS_NODE_SECONDS)
            assert code == CLOSE_AUTH


async def test_presence_on_one_node_sees_a_stream_on_the_other(cluster: Cluster) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, bob, warmer = await signup_many(on_a, 3)
        assert (await user_json(on_a, bob, alice.id))["online"] is False
        async with ready_stream(on_b, cluster.b.ws_url, alice, warmer):
            await wait_online(on_a, bob, alice.id, True)
            assert (await user_json(on_a, bob, alice.id))["last_seen_at"] is not None
        await wait_online(on_a, bob, alice.id, False)


async def test_workers_2_with_redis_deliver_across_workers(cluster: Cluster, workdir: Path) -> None:
    with running_server(workdir, cluster.env, ["--workers", "2"]) as node:
        async with api_for(node) as api, contextlib.AsyncExitStack() as stack:
            alice, bob, warmer = await signup_many(api, 3)
            # The kernel picks a worker per connection: open streams until two workers
            # hold some (bounded), so the POST below is surely served by another worker
            # than some of them.
            streams, owners = [], set()
            while len(owners) < 2:
                assert len(streams) < 24, f"every stream landed on worker(s) {owners}"
                ws = await stack.enter_async_context(ready_stream(api, node.ws_url, alice, warmer))
                for earlier in streams:  # the new warm-up reaches the earlier streams too
                    await next_message(earlier)
                streams.append(ws)
                owners.add(connection_owner(node, ws.local_address[1]))
                owners.discard(None)
            sent = await api.send(bob, alice.id, "to every worker")
            for ws in streams:
                assert await next_message(ws, within=CROSS_NODE_SECONDS) == sent


async def test_edits_and_deletions_on_one_node_reach_streams_on_the_other(
    cluster: Cluster,
) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, bob, warmer = await signup_many(on_a, 3)
        async with (
            ready_stream(on_b, cluster.b.ws_url, alice, warmer) as alice_on_b,
            ready_stream(on_a, cluster.a.ws_url, bob, warmer) as bob_on_a,
        ):
            sent = await on_b.send(alice, bob.id, "frist")
            assert (await next_message(bob_on_a, within=CROSS_NODE_SECONDS))["id"] == sent["id"]
            assert (await next_message(alice_on_b, within=CROSS_NODE_SECONDS))["id"] == sent["id"]
            r = await on_a.client.patch(
                f"/api/v1/chats/{sent['id']}/", json={"message": "first"}, headers=alice.auth
            )
            assert r.status_code == 200, r.text
            for ws in (alice_on_b, bob_on_a):
                event = await next_event(ws, within=CROSS_NODE_SECONDS)
                assert (event["type"], event["message"]) == ("edited", r.json())
            r = await on_b.client.delete(f"/api/v1/chats/{sent['id']}/", headers=alice.auth)
            assert r.status_code == 204
            for ws in (alice_on_b, bob_on_a):
                event = await next_event(ws, within=CROSS_NODE_SECONDS)
                assert (event["type"], event["message_id"]) == ("deleted", sent["id"])


async def test_a_message_cached_on_one_node_is_evicted_by_an_edit_on_the_other(
    cluster: Cluster,
) -> None:
    async with api_for(cluster.a) as on_a, api_for(cluster.b) as on_b:
        alice, bob = await signup_many(on_a, 2)
        sent = await on_a.send(alice, bob.id, "cached words")
        for _ in range(2):  # received, then served from node B's cache of received messages
            assert (await on_b.inbox(bob))["messages"][0]["message"] == "cached words"
        r = await on_a.client.patch(
            f"/api/v1/chats/{sent['id']}/", json={"message": "new words"}, headers=alice.auth
        )
        assert r.status_code == 200

        async def shows(text: str | None) -> bool:
            return bool((await on_b.inbox(bob))["messages"][0]["message"] == text)

        # The eviction crosses nodes through Redis after the 200; bounded generously, as a
        # busy machine delays it (the 1 s bound is the issue's, for messages to streams).
        await wait_until(lambda: shows("new words"), EVICTION_SECONDS, "the edit on node B")
        r = await on_a.client.delete(f"/api/v1/chats/{sent['id']}/", headers=alice.auth)
        assert r.status_code == 204
        await wait_until(lambda: shows(None), EVICTION_SECONDS, "the tombstone on node B")
