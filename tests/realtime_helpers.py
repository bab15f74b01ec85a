"""Helpers for the real-time tests: an in-process server on a real socket, stream clients.

Everything waits on frames or events with a deadline; nothing sleeps and hopes.

* `serve_in_thread`: ``create_app(settings)`` served by uvicorn in a background thread on a
  real TCP port. Real sockets give real backpressure (Litestar's test client does not),
  while settings that no ``CHAT_*`` variable reaches (``stream_queue_size``) stay
  reachable.
* `open_stream` / `next_event` / `read_until_closed`: WebSocket clients (``websockets``).
* `open_sse`: a Server-Sent Events reader over httpx.
* `RawWebSocket`: a hand-made client for what libraries do for you (answering pings).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from chatserver.app import create_app
from chatserver.config import Settings
from chatserver.migrations import upgrade
from tests.helpers import Api, User

HOST = "127.0.0.1"
TIMEOUT = 5.0  # the default bound on any single wait in these tests
CLOSE_AUTH = 4401
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
CLOSE_PING_TIMEOUT = 1011

# ------------------------------------------------------------------ in-process server


@dataclass
class LiveServer:
    """Where a server listens (in-process thread or real process)."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"


def _listening_socket(send_buffer: int | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        # Accepted sockets inherit it (and it turns off send-buffer autotuning).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind((HOST, 0))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def serve_in_thread(
    settings: Settings, *, send_buffer: int | None = None, timeout: float = 30.0
) -> Iterator[LiveServer]:
    """Migrate, then serve ``create_app(settings)`` with uvicorn in a thread until exit."""
    upgrade(settings.database_url)
    sock = _listening_socket(send_buffer)
    config = uvicorn.Config(
        create_app(settings),
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.01)
        yield LiveServer(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


# ------------------------------------------------------------------ waiting


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float = TIMEOUT, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def user_json(api: Api, viewer: User, user_id: int) -> dict[str, Any]:
    r = await api.client.get("/api/v1/users/", params={"user_id": user_id}, headers=viewer.auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_online(
    api: Api, viewer: User, user_id: int, online: bool, within: float = TIMEOUT
) -> None:
    async def check() -> bool:
        return (await user_json(api, viewer, user_id))["online"] is online

    await wait_until(check, within, f"user {user_id} online={online}")


# ------------------------------------------------------------------ WebSocket clients


def stream_url(ws_url: str, after_id: int | None = None, since: int | None = None) -> str:
    params = {"after_id": after_id, "since": since}
    query = "&".join(f"{name}={value}" for name, value in params.items() if value is not None)
    return f"{ws_url}/api/v1/stream{'?' if query else ''}{query}"


@contextlib.asynccontextmanager
async def open_stream(
    ws_url: str,
    token: str | None = None,
    *,
    after_id: int | None = None,
    since: int | None = None,
    auth_frame: bool = False,
    frame_after_id: int | None = None,
    frame_since: int | None = None,
    **kwargs: Any,
) -> AsyncIterator[ClientConnection]:
    """A stream socket: Bearer header by default, or the ``{"type": "auth"}`` first frame.
    It resumes after a position (``since``) or a message id (``after_id``), in the query
    or in the auth frame."""
    headers = {"Authorization": f"Bearer {token}"} if token and not auth_frame else {}
    async with websockets.connect(
        stream_url(ws_url, after_id, since),
        additional_headers=headers,
        open_timeout=TIMEOUT,
        **kwargs,
    ) as ws:
        if auth_frame:
            frame: dict[str, Any] = {"type": "auth", "token": token}
            if frame_after_id is not None:
                frame["after_id"] = frame_after_id
            if frame_since is not None:
                frame["since"] = frame_since
            await ws.send(json.dumps(frame))
        yield ws


# Events without a position that come whenever peers type or come and go: the helpers
# below skip them unless asked for them (``next_any_event``, ``until``).
EPHEMERAL = ("typing", "presence")


def is_ephemeral(event: dict[str, Any]) -> bool:
    return event.get("type") in EPHEMERAL


async def next_any_event(ws: ClientConnection, within: float = TIMEOUT) -> dict[str, Any]:
    """The next event (decoded), ephemeral ones included; fails if none arrives in time or
    the socket closes."""
    async with asyncio.timeout(within):
        raw = await ws.recv()
    event: dict[str, Any] = json.loads(raw)
    return event


async def next_event(ws: ClientConnection, within: float = TIMEOUT) -> dict[str, Any]:
    """The next event that is not ephemeral (typing, presence)."""
    deadline = time.monotonic() + within
    while is_ephemeral(event := await next_any_event(ws, max(deadline - time.monotonic(), 0.001))):
        pass
    return event


async def next_message_event(ws: ClientConnection, within: float = TIMEOUT) -> dict[str, Any]:
    """The next ``message`` event (with its ``pos``), skipping other event types."""
    deadline = time.monotonic() + within
    while True:
        event = await next_event(ws, max(deadline - time.monotonic(), 0.001))
        if event["type"] == "message":
            return event


async def next_message(ws: ClientConnection, within: float = TIMEOUT) -> dict[str, Any]:
    """The next ``message`` event's message, skipping other event types."""
    message: dict[str, Any] = (await next_message_event(ws, within))["message"]
    return message


async def message_events(
    ws: ClientConnection, count: int, within: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The next ``count`` message events, in arrival order."""
    deadline = time.monotonic() + within
    return [
        await next_message_event(ws, max(deadline - time.monotonic(), 0.001)) for _ in range(count)
    ]


async def message_ids(ws: ClientConnection, count: int, within: float = TIMEOUT) -> list[int]:
    """The ids of the next ``count`` message events, in arrival order."""
    deadline = time.monotonic() + within
    return [
        (await next_message(ws, max(deadline - time.monotonic(), 0.001)))["id"]
        for _ in range(count)
    ]


async def read_until_closed(
    ws: ClientConnection, within: float = TIMEOUT
) -> tuple[int | None, list[str]]:
    """Read until the server closes; return (close code, frames received before it)."""
    frames: list[str] = []
    async with asyncio.timeout(within):
        try:
            while True:
                raw = await ws.recv()
                frame = raw if isinstance(raw, str) else raw.decode()
                if not (frame.startswith("{") and is_ephemeral(json.loads(frame))):
                    frames.append(frame)
        except websockets.ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd else None), frames


async def refused(
    ws_url: str, within: float = TIMEOUT, **kwargs: Any
) -> tuple[int | None, list[str]]:
    """Open a stream that should be refused: (4401, frames) or (401, []) on the upgrade."""
    try:
        async with open_stream(ws_url, **kwargs) as ws:
            return await read_until_closed(ws, within)
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, []


@contextlib.asynccontextmanager
async def ready_stream(
    api: Api, ws_url: str, user: User, peer: User, token: str | None = None, **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    """A stream known to be live: a message from ``peer`` sent first is replayed on it,
    which proves it is registered with the hub and subscribed."""
    warm = await api.send(peer, user.id, "warm-up")
    async with open_stream(ws_url, token or user.token, after_id=warm["id"] - 1, **kwargs) as ws:
        assert (await next_message(ws))["id"] == warm["id"]
        yield ws


# ------------------------------------------------------------------ ephemeral events
# Whether something was *not* delivered is checked with a marker: a message sent afterwards
# arrives after anything published before it, so the events before it are all there were.


async def until(
    ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool], within: float = TIMEOUT
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The next event ``wanted`` says yes to, and the events before it."""
    deadline = time.monotonic() + within
    before = []
    while not wanted(event := await next_any_event(ws, max(deadline - time.monotonic(), 0.001))):
        before.append(event)
    return event, before


async def before_marker(
    api: Api, ws: ClientConnection, sender: User, to: User, kind: str
) -> list[dict[str, Any]]:
    """Send ``to`` a marker message; the events of type ``kind`` its stream got before it."""
    marker = await api.send(sender, to.id, "marker")
    _, before = await until(ws, lambda e: e.get("message", {}).get("id") == marker["id"])
    return [e for e in before if e["type"] == kind]


async def send_frame_and_wait(ws: ClientConnection, frame: dict[str, Any]) -> None:
    """Send a frame, then one the server answers with an error event: frames are read in
    order, so once that answer is here the first frame was handled."""
    await ws.send(json.dumps(frame))
    await ws.send(json.dumps({"type": "sync"}))
    await until(ws, lambda e: e["type"] == "error")


def presence_of(user: User) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "presence" and e["user_id"] == user.id


# ------------------------------------------------------------------ Server-Sent Events


@dataclass
class SseEvent:
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded


class SseReader:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, within: float = TIMEOUT, ephemeral: bool = False) -> SseEvent:
        """The next event with data (comments are collected into it), skipping ephemeral
        ones unless ``ephemeral``; EOFError at the end."""
        event = SseEvent()
        async with asyncio.timeout(within):
            async for line in self._lines:
                if line == "":
                    if event.data and (ephemeral or not is_ephemeral(event.json())):
                        return event
                    event = SseEvent() if event.data else event
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    event.comments.append(value)
                elif name == "id":
                    event.id = value
                elif name == "data":
                    event.data = f"{event.data}\n{value}" if event.data else value
        raise EOFError("the event stream ended")

    async def message(self, within: float = TIMEOUT) -> tuple[str | None, dict[str, Any]]:
        """(SSE id, message) of the next ``message`` event (its id is its position)."""
        deadline = time.monotonic() + within
        while True:
            event = await self.next(max(deadline - time.monotonic(), 0.001))
            body = event.json()
            if body["type"] == "message":
                message: dict[str, Any] = body["message"]
                return event.id, message


@contextlib.asynccontextmanager
async def open_sse(
    client: httpx.AsyncClient, user: User, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[SseReader]:
    all_headers = {"Accept": "text/event-stream", **user.auth, **(headers or {})}
    async with client.stream(
        "GET", "/api/v1/stream", params=params, headers=all_headers, timeout=None
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseReader(response)


# ------------------------------------------------------------------ a hand-made client

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


class RawWebSocket:
    """A WebSocket client with nothing automatic: it answers pings only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str, headers: dict[str, str]) -> RawWebSocket:
        reader, writer = await asyncio.open_connection(HOST, port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {HOST}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def read_frame(self, within: float = TIMEOUT) -> Frame:
        """The next frame (unfragmented frames only); EOFError when the server hung up."""
        async with asyncio.timeout(within):
            try:
                first, second = await self.reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
                return Frame(first & 0x0F, await self.reader.readexactly(length))
            except asyncio.IncompleteReadError:
                raise EOFError("the server closed the connection") from None

    async def read_to_eof(self, within: float = TIMEOUT) -> list[Frame]:
        """Every frame until the server hangs up (which must happen within ``within`` s)."""
        frames: list[Frame] = []
        async with asyncio.timeout(within):
            while True:
                try:
                    frames.append(await self.read_frame(within))
                except EOFError:
                    return frames

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame (clients must mask); payloads under 126 bytes."""
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
