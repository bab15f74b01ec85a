"""Request-rate limits and the per-user stream cap, against a real ``chatserver serve``.

Each test talks from its own loopback address (127.0.0.0/8 is all local), so the
per-address buckets of one test do not leak into the next."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from testinfra.postgres import PostgresServer
from testinfra.redis import RedisServer
from testinfra.server import ServerProcess, running_server
from tests.helpers import PASSWORD, Api, User
from tests.realtime_helpers import next_message_event, read_until_closed

CLOSE_TOO_MANY_STREAMS = 4429
_addresses = (f"127.0.{i}.{j}" for i in itertools.count(10) for j in range(2, 250))
_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with every limit at its default."""
    workdir = tmp_path_factory.mktemp("limits")
    env = {"CHAT_DATABASE_URL": f"sqlite:///{workdir / 'chat.db'}"}
    with running_server(workdir, env, defaults=True) as running:
        yield running


@asynccontextmanager
async def client_from(
    base_url: str, address: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address`` (a fresh one by default)."""
    transport = httpx.AsyncHTTPTransport(local_address=address or next(_addresses))
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30) as client:
        yield client


async def new_user(base_url: str) -> User:
    """A user signed up from an address of its own (sign-ups are limited per address)."""
    async with client_from(base_url) as client:
        return await Api(client).signup(f"lim{next(_names)}")  # type: ignore[arg-type]


async def send(client: httpx.AsyncClient, sender: User, to: int) -> httpx.Response:
    return await client.post(
        "/api/v1/chats/", json={"user_id": to, "message": "hi"}, headers=sender.auth
    )


def assert_rate_headers(r: httpx.Response, limit: int) -> None:
    assert r.headers["RateLimit-Limit"] == str(limit)
    assert 0 <= int(r.headers["RateLimit-Remaining"]) <= limit
    assert int(r.headers["RateLimit-Reset"]) >= 0


def assert_429(r: httpx.Response, words: str, code: str = "rate-limited") -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["Retry-After"]) >= 1
    body = r.json()
    assert (body["status"], body["type"].rsplit("/", 1)[-1]) == (429, code)
    assert words in body["detail"]


async def test_sends_allow_a_burst_of_30_then_429_and_another_user_is_unaffected(
    server: ServerProcess,
) -> None:
    alice, bob, carol = [await new_user(server.base_url) for _ in range(3)]
    address = next(_addresses)  # alice and carol send from the same address
    async with client_from(server.base_url, address) as client:
        statuses = []
        for _ in range(100):  # 10 per second refill: a 429 comes well before 100
            r = await send(client, alice, bob.id)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
            assert_rate_headers(r, 30)
        assert statuses[:30] == [201] * 30
        assert_429(r, "writes")
        assert_rate_headers(r, 30)
        assert r.headers["RateLimit-Remaining"] == "0"
        other = await send(client, carol, bob.id)
        assert other.status_code == 201, other.text


async def test_reads_are_limited_per_user_with_headers(server: ServerProcess) -> None:
    alice = await new_user(server.base_url)
    async with client_from(server.base_url) as client:
        r = await client.get("/api/v1/chats/", headers=alice.auth)
        assert r.status_code == 200
        assert_rate_headers(r, 100)
        assert int(r.headers["RateLimit-Remaining"]) == 99


async def test_sign_ups_are_limited_per_address(server: ServerProcess) -> None:
    async with client_from(server.base_url) as client:
        statuses = []
        for _ in range(40):  # 10 at once, then one every 10 s
            name = f"signup{next(_names)}"
            body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
            r = await client.post("/api/v1/users/", json=body)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[:10] == [201] * 10
        assert_429(r, "sign-ups")
        assert_rate_headers(r, 10)
    # Another address still signs up.
    await new_user(server.base_url)


async def test_token_requests_are_limited_per_address(server: ServerProcess) -> None:
    alice = await new_user(server.base_url)
    async with client_from(server.base_url) as client:
        statuses = []
        for _ in range(60):
            # Counted before the body is read: invalid ones count, and no password is hashed.
            r = await client.post("/api/v1/auth/token/", json={})
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[:20] == [400] * 20
        assert_429(r, "token requests")
    async with client_from(server.base_url) as other:
        login = {"username": alice.username, "password": PASSWORD}
        r = await other.post("/api/v1/auth/token/", json=login)
        assert r.status_code == 200, r.text


async def test_unlimited_routes_carry_no_rate_headers(server: ServerProcess) -> None:
    async with client_from(server.base_url) as client:
        r = await client.get("/healthz")
    assert r.status_code == 200
    assert "RateLimit-Limit" not in r.headers


def test_rate_limits_off_switches_them_off(tmp_path: Path) -> None:
    env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "CHAT_RATE_LIMITS": "off"}
    with (
        running_server(tmp_path, env, ["--send-burst", "2"]) as off,
        httpx.Client(base_url=off.base_url, timeout=30) as client,
    ):
        users = []
        for name in ("offa", "offb"):
            body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
            uid = client.post("/api/v1/users/", json=body).json()["id"]
            token = client.post(
                "/api/v1/auth/token/", json={"username": name, "password": PASSWORD}
            ).json()["token"]
            users.append((uid, {"Authorization": f"Bearer {token}"}))
        for _ in range(10):
            r = client.post(
                "/api/v1/chats/",
                json={"user_id": users[1][0], "message": "x"},
                headers=users[0][1],
            )
            assert r.status_code == 201, r.text
            assert "RateLimit-Limit" not in r.headers


def test_openapi_documents_429_and_the_rate_headers(server: ServerProcess) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
    send_op = document["paths"]["/api/v1/chats"]["post"]
    assert "429" in send_op["responses"]
    assert "Retry-After" in send_op["responses"]["429"]["headers"]
    assert "RateLimit-Remaining" in send_op["responses"]["201"]["headers"]
    signup = document["paths"]["/api/v1/users"]["post"]
    assert "429" in signup["responses"]
    assert "429" not in document["paths"]["/healthz"]["get"]["responses"]


# ---------------------------------------------------------------- streams per user


def ws_url(server: ServerProcess) -> str:
    return f"{server.ws_url}/api/v1/stream"


async def test_the_21st_stream_of_a_user_is_refused_and_others_still_connect(
    server: ServerProcess,
) -> None:
    alice, bob = await new_user(server.base_url), await new_user(server.base_url)
    async with AsyncExitStack() as stack:
        for _ in range(20):
            ws = await stack.enter_async_context(
                websockets.connect(ws_url(server), additional_headers=alice.auth)
            )
        # The last of the 20 is really open: it gets alice's events.
        async with client_from(server.base_url) as client:
            assert (await send(client, bob, alice.id)).status_code == 201
        assert (await next_message_event(ws))["type"] == "message"
        # 30 more at once, while another address probes the server.
        refused, probes = await asyncio.gather(
            asyncio.gather(*(extra_stream(server, alice) for _ in range(30))),
            probe(server, 10),
        )
        assert all(code == CLOSE_TOO_MANY_STREAMS for code, _ in refused), refused
        assert all(any('"too-many-streams"' in f for f in frames) for _, frames in refused)
        assert probes == [200] * 10
        async with client_from(server.base_url) as client:
            r = await client.get(
                "/api/v1/stream", headers={**alice.auth, "Accept": "text/event-stream"}
            )
            assert_429(r, "streams open", "too-many-streams")
        async with websockets.connect(ws_url(server), additional_headers=bob.auth) as ws_bob:
            async with client_from(server.base_url) as client:
                assert (await send(client, alice, bob.id)).status_code == 201
            assert (await next_message_event(ws_bob))["type"] == "message"


async def extra_stream(server: ServerProcess, user: User) -> tuple[int | None, list[str]]:
    async with websockets.connect(ws_url(server), additional_headers=user.auth) as extra:
        return await read_until_closed(extra, within=30)


async def probe(server: ServerProcess, count: int) -> list[int]:
    """GET /healthz ``count`` times from an address of its own."""
    async with client_from(server.base_url) as client:
        return [(await client.get("/healthz")).status_code for _ in range(count)]


async def test_a_token_in_the_query_string_is_refused_and_never_logged(
    server: ServerProcess,
) -> None:
    alice = await new_user(server.base_url)
    url = f"{ws_url(server)}?token={alice.token}"
    async with websockets.connect(url) as ws:
        code, frames = await read_until_closed(ws)
    assert code == 4401
    assert any('"token-in-query"' in str(frame) for frame in frames)
    async with client_from(server.base_url) as client:
        r = await client.get(
            "/api/v1/stream",
            params={"token": alice.token},
            headers={**alice.auth, "Accept": "text/event-stream"},
        )
    assert r.status_code == 400
    assert "token" in r.json()["errors"]
    assert alice.token not in server.log()
    assert "WebSocket /api/v1/stream" in server.log()  # the line is logged, its query is not


# ---------------------------------------------------------------- shared across nodes


@pytest.fixture
def two_nodes(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path, redis_url: str
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    database = postgres_server.create_database()
    env = {
        "CHAT_DATABASE_URL": postgres_server.url(database),
        "CHAT_REDIS_URL": redis_url,
        "CHAT_SEND_BURST": "10",
        "CHAT_SEND_RATE": "0.1",
        "CHAT_MAX_STREAMS_PER_USER": "3",
    }
    try:
        with running_server(tmp_path, env) as one, running_server(tmp_path, env) as two:
            yield one, two
    finally:
        postgres_server.drop_database(database)


async def test_with_redis_the_limits_are_shared_by_every_node(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    one, two = two_nodes
    alice, bob = await new_user(one.base_url), await new_user(two.base_url)
    statuses: list[int] = []
    async with client_from(one.base_url) as c1, client_from(two.base_url) as c2:
        for _ in range(6):  # 12 sends, alternating nodes, against one burst of 10
            for client in (c1, c2):
                statuses.append((await send(client, alice, bob.id)).status_code)
    assert statuses[:10] == [201] * 10
    assert statuses[10:] == [429, 429]


async def test_with_redis_the_stream_cap_counts_every_nodes_streams(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    one, two = two_nodes
    alice, bob = await new_user(one.base_url), await new_user(two.base_url)
    async with AsyncExitStack() as stack:
        streams = [  # three of three: two on one node, one on the other
            await stack.enter_async_context(
                websockets.connect(ws_url(node), additional_headers=alice.auth)
            )
            for node in (one, two, one)
        ]
        # Each is really open (counted before it subscribes): each gets alice's events.
        async with client_from(one.base_url) as client:
            assert (await send(client, bob, alice.id)).status_code == 201
        for ws in streams:
            assert (await next_message_event(ws))["type"] == "message"
        # Node two holds one of alice's streams: alone it would admit two more.
        code, frames = await extra_stream(two, alice)
        assert code == CLOSE_TOO_MANY_STREAMS, (code, frames)
        assert any('"too-many-streams"' in frame for frame in frames)
    # Closed streams leave the count once their close reaches the servers: a new stream
    # then opens and gets alice's events (a few tries: bob's sends are limited to 10).
    for _ in range(9):
        async with websockets.connect(ws_url(two), additional_headers=alice.auth) as ws:
            async with client_from(two.base_url) as client:
                assert (await send(client, bob, alice.id)).status_code == 201
            code = await close_code_before_a_message(ws)
        if code is None:
            return
        assert code == CLOSE_TOO_MANY_STREAMS
        await asyncio.sleep(0.5)
    pytest.fail("no stream was admitted after alice's three closed")


async def close_code_before_a_message(ws: ClientConnection) -> int | None:
    """None when a message event arrives; the close code if the server closes first."""
    try:
        await next_message_event(ws)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1
    return None
