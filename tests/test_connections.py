"""Bounded connections (``chatserver/connections.py``) against a real ``chatserver serve``:
each attack runs from 127.0.0.1 in a bounded loop while a probe from 127.0.0.2 must
succeed every time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from testinfra import procs
from testinfra.server import ServerProcess, running_server

ATTACKER = "127.0.0.1"
PROBE = "127.0.0.2"
WAIT = 20.0  # bound on any wait for the server to act


def serve(tmp_path: Path, **env: str) -> contextlib.AbstractContextManager[ServerProcess]:
    base = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "CHAT_LOG_LEVEL": "warning"}
    return running_server(tmp_path, {**base, **env})


async def probe(server: ServerProcess, stop: asyncio.Event, minimum: int = 10) -> list[int]:
    """GET /healthz from the probe address, a new connection each time, until ``stop``
    (and at least ``minimum`` times); the statuses (0 for a failed connection)."""
    statuses: list[int] = []
    while not stop.is_set() or len(statuses) < minimum:
        transport = httpx.AsyncHTTPTransport(local_address=PROBE)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            try:
                r = await client.get(f"{server.base_url}/healthz")
                statuses.append(r.status_code)
            except httpx.HTTPError:
                statuses.append(0)
        await asyncio.sleep(0.05)
    return statuses


async def while_probing(server: ServerProcess, attack: Callable[[], Awaitable[None]]) -> None:
    """Run ``attack`` with the probe beside it; every probe must succeed."""
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(server, stop))
    try:
        await attack()
    finally:
        stop.set()
    statuses = await probing
    assert statuses == [200] * len(statuses), statuses


@contextlib.asynccontextmanager
async def connections(
    server: ServerProcess, count: int, host: str = ATTACKER
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            opened.append(
                await asyncio.open_connection(procs.HOST, server.port, local_addr=(host, 0))
            )
        yield opened
    finally:
        for _, writer in opened:
            writer.transport.abort()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Wait (bounded) for the server to close; True if it did."""
    try:
        async with asyncio.timeout(WAIT):
            while await reader.read(65536):
                pass
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    return True


async def count_closed(
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], expected: int
) -> int:
    """How many of ``conns`` the server has closed, once ``expected`` have (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        closed = sum(1 for reader, _ in conns if reader.at_eof() or reader.exception())
        if closed >= expected or time.monotonic() > deadline:
            return closed
        await asyncio.sleep(0.1)
        for reader, _ in conns:  # let each reader notice EOF or a reset
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.001)


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[ServerProcess]:
    """Small caps, so the floods stay short."""
    with serve(
        tmp_path,
        CHAT_MAX_CONNECTIONS_PER_ADDRESS="200",
        CHAT_HEADER_TIMEOUT_SECONDS="60",
    ) as server:
        yield server


async def test_an_idle_connection_flood_is_capped_per_address(tight: ServerProcess) -> None:
    async def attack() -> None:
        async with connections(tight, 260) as conns:
            assert await count_closed(conns, 60) == 60  # the 60 over the cap of 200

    await while_probing(tight, attack)


async def test_the_total_cap_holds_across_addresses(tmp_path: Path) -> None:
    with serve(tmp_path, CHAT_MAX_CONNECTIONS="150", CHAT_HEADER_TIMEOUT_SECONDS="60") as server:
        async with (
            connections(server, 100, "127.0.0.3") as first,
            connections(server, 100, "127.0.0.4") as second,
        ):
            assert await count_closed(first + second, 50) == 50
        # Once they are gone, new connections are admitted again.
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"{server.base_url}/healthz")
        assert r.status_code == 200


async def trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    """Send a request head a byte every 0.1 s (20 s at most) until the server closes the
    connection; how many seconds that took."""
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for _ in range(200):
        if reader.at_eof() or writer.is_closing():
            break
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(b"a")
            await writer.drain()
        try:
            if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                break
        except TimeoutError:
            continue
        except (ConnectionError, OSError):
            break
    return time.monotonic() - started


async def get_health(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One ``GET /healthz`` on an open connection: its response head (the body is read)."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        line.partition(b":")[2]
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    await asyncio.wait_for(reader.readexactly(int(length)), WAIT)
    return head


async def test_slowloris_heads_are_cut_off_at_the_head_timeout(tmp_path: Path) -> None:
    with serve(tmp_path, CHAT_HEADER_TIMEOUT_SECONDS="2") as server:

        async def attack() -> None:
            async with connections(server, 30) as conns:
                took = await asyncio.gather(*(trickle_head(r, w) for r, w in conns))
                assert max(took) < 15, took  # closed near 2 s, not held for the 20 s

        await while_probing(server, attack)


async def test_each_head_on_a_kept_alive_connection_has_its_own_deadline(tmp_path: Path) -> None:
    with serve(tmp_path, CHAT_HEADER_TIMEOUT_SECONDS="2") as server:
        async with connections(server, 1) as [(reader, writer)]:
            await get_health(reader, writer)
            # The second head trickles in: its deadline is enforced, and runs from its own
            # first byte.
            took = await trickle_head(reader, writer)
        assert 1.5 < took < 15, took  # closed near its 2 s, not held for the 20 s


async def test_a_silent_connection_is_closed_at_the_head_timeout(tmp_path: Path) -> None:
    with serve(tmp_path, CHAT_HEADER_TIMEOUT_SECONDS="1") as server:
        async with connections(server, 5) as conns:
            closed = await asyncio.gather(*(closed_by_server(r) for r, _ in conns))
        assert closed == [True] * 5


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    with serve(tmp_path, CHAT_KEEPALIVE_TIMEOUT_SECONDS="1") as server:
        async with connections(server, 1) as [(reader, writer)]:
            await get_health(reader, writer)
            assert await closed_by_server(reader)


def raw_request(server: ServerProcess, header_bytes: int) -> bytes:
    import socket

    with socket.create_connection((procs.HOST, server.port), timeout=WAIT) as sock:
        value = b"a" * header_bytes
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + value + b"\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_head_over_the_limit_gets_431_and_one_under_it_is_served(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        assert raw_request(server, 30 * 1024).startswith(b"HTTP/1.1 200")
        answer = raw_request(server, 40 * 1024)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
        assert b"application/problem+json" in answer


async def test_endless_headers_are_refused_without_buffering_them(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        before = procs.tree_rss_kib(server.pid)

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
            """Stream an unfinished head; how many 64 KiB chunks went out before the
            server closed the connection."""
            answer = asyncio.create_task(reader.read(200))  # reads while we write
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * 65536
            sent = 0
            with contextlib.suppress(ConnectionError, OSError):
                for _ in range(640):  # 40 MiB at most
                    if answer.done():
                        break
                    writer.write(chunk)
                    await writer.drain()
                    sent += 1
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                # 431, or nothing when the reset overtook it (data unread at close)
                got = await asyncio.wait_for(answer, WAIT)
                assert got == b"" or got.startswith(b"HTTP/1.1 431"), got
            return sent

        async def attack() -> None:
            async with connections(server, 10) as conns:
                sent = await asyncio.gather(*(endless(r, w) for r, w in conns))
            # Cut off long before 40 MiB (the socket buffers hold a few MiB).
            assert max(sent) < 640, sent

        await while_probing(server, attack)
        grown_mib = (procs.tree_rss_kib(server.pid) - before) / 1024
        assert grown_mib < 40, grown_mib


def test_serve_raises_the_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        command = server.server_command()
        assert "chatserver.connections:GuardedHttpToolsProtocol" in command
        pid = next(p for p in procs.process_tree(server.pid) if _is_server(p))
        limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
        files = next(line for line in limits if line.startswith("Max open files")).split()
        assert files[3] == files[4]  # soft == hard


def _is_server(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


async def test_a_websocket_holds_its_slot_until_it_closes(tmp_path: Path) -> None:
    """An upgraded connection counts against the per-address cap while open and gives its
    slot back when it closes (the WebSocket protocol's connection_lost releases it)."""

    async def open_three(url: str) -> list[ClientConnection]:
        deadline = time.monotonic() + WAIT
        while True:  # the server may still be releasing the previous round's slots
            sockets: list[ClientConnection] = []
            try:
                for _ in range(3):
                    sockets.append(await connect(url))
                return sockets
            except (OSError, WebSocketException):
                for ws in sockets:
                    await ws.close()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    # Unauthenticated sockets wait up to 5 s for an auth frame: long enough for a round.
    with serve(tmp_path, CHAT_MAX_CONNECTIONS_PER_ADDRESS="3") as server:
        for _ in range(2):  # the second round connects only if the first gave its slots back
            sockets = await open_three(server.ws_url + "/api/v1/stream")
            async with connections(server, 1) as conns:
                assert await count_closed(conns, 1) == 1  # over the cap while they are open
            for ws in sockets:
                await ws.close()
