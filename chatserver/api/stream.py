"""/api/v1/stream — the live event stream, over WebSocket or Server-Sent Events.

Both serve the same feed (see streams.py): replay after a position, then live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, NamedTuple

import msgspec
from litestar import Request, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.response import ServerSentEvent, ServerSentEventMessage

from chatserver import store
from chatserver.actions import token_cutoff
from chatserver.api import route
from chatserver.api.deps import Caller, authenticate, client_address, header, services_of
from chatserver.api.readers import QueryReader
from chatserver.config import MAX_FRAME_BYTES
from chatserver.errors import (
    ChatError,
    InvalidInput,
    NotAcceptable,
    NotAuthenticated,
    TooManyAttempts,
)
from chatserver.hub import CLOSE_REVOKED, CLOSE_TOO_MANY_STREAMS, StreamHandle, TooManyStreams
from chatserver.metrics import DELIVERED_SSE, DELIVERED_WS, OPEN_STREAMS
from chatserver.schemas import MAX_ID, StreamHeaders, StreamQuery, TypingFrame
from chatserver.services import Services
from chatserver.streams import (
    Feed,
    StreamEvent,
    StreamUnavailable,
    start_position,
    subscription,
)
from chatserver.tasks import cancel_and_wait
from chatserver.typing_relay import relay_typing

log = logging.getLogger("chatserver")
OPEN_WS = OPEN_STREAMS.labels("websocket")
OPEN_SSE = OPEN_STREAMS.labels("sse")

AUTH_TIMEOUT_SECONDS = 5.0
SSE_KEEPALIVE_SECONDS = 15.0
# How long a close frame may wait behind unread data (a client that stopped reading)
# before the handler gives up and the server drops the connection.
CLOSE_TIMEOUT_SECONDS = 5.0
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
CLOSE_UNAVAILABLE = 1011
CLOSE_INVALID = 1008  # policy violation: the query string is invalid


class AuthFrame(msgspec.Struct, tag="auth", tag_field="type"):
    token: str
    after_id: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)] | None = None
    since: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)] | None = None


class Resume(NamedTuple):
    """Where a stream starts: after a position (``since``), after a message id, or now."""

    since: int | None = None
    after_id: int | None = None

    def overridden_by(self, other: Resume) -> Resume:
        return other if other.since is not None or other.after_id is not None else self

    async def position(self, services: Services, user_id: int) -> int:
        if self.since is not None:
            return self.since
        return await start_position(services, user_id, self.after_id)


_decode_auth = msgspec.json.Decoder(AuthFrame).decode
_decode_frame = msgspec.json.Decoder(AuthFrame | TypingFrame).decode
_encode = msgspec.json.Encoder().encode


def error_event(code: str, detail: str) -> str:
    return _encode({"type": "error", "code": code, "detail": detail}).decode()


# ---------------------------------------------------------------- WebSocket


STREAM_QUERY = QueryReader(StreamQuery)


@websocket("/api/v1/stream")
async def stream_socket(socket: WebSocket[Any, Any, Any]) -> None:
    """Live events over WebSocket (Bearer header, or a first frame {"type": "auth", …}).

    Query: ``since`` or ``after_id`` as for Server-Sent Events (the same declaration).
    The client may send ``{"type": "typing", "to": <user_id>}`` frames (as ``POST
    /api/v1/conversations/{user_id}/typing``); anything else gets an error event."""
    services = services_of(socket)
    # Accept first: a refusal before accepting reaches most clients as a bare HTTP 403.
    await socket.accept()
    if token_in_query(socket.scope):
        await socket.send_data(error_event("token-in-query", QUERY_CREDENTIALS_REFUSED))
        await _close(socket, CLOSE_REVOKED)
        return
    try:
        query = STREAM_QUERY.read_scope(socket.scope)
    except InvalidInput as exc:
        await socket.send_data(error_event(exc.code, exc.detail))
        await _close(socket, CLOSE_INVALID)
        return
    try:
        resume = Resume(query.since, query.after_id)
        caller, resume = await _authenticate_socket(socket, services, resume)
    except (NotAuthenticated, TimeoutError, WebSocketDisconnect):
        await _close(socket, CLOSE_REVOKED)
        return
    except TooManyAttempts:  # Basic credentials of a throttled account
        await _close(socket, CLOSE_TRY_AGAIN)
        return
    try:
        services.hub.admit(caller.user_id)
    except TooManyStreams as exc:
        await socket.send_data(error_event(exc.code, exc.detail))
        await _close(socket, CLOSE_TOO_MANY_STREAMS)
        return
    code = await _stream_to_socket(socket, services, caller, resume)
    if code is not None:
        await _close(socket, code)


async def _stream_to_socket(
    socket: WebSocket[Any, Any, Any], services: Services, caller: Caller, resume: Resume
) -> int | None:
    """Serve the feed; return the close code to send (None when the client is gone)."""
    handle = StreamHandle(caller.user_id, caller.token_hash)
    OPEN_WS.inc()
    try:
        since = await resume.position(services, caller.user_id)
        await services.hub.open(handle)
        await _close_if_revoked_meanwhile(services, caller, handle)
        async with subscription(services.events.channels, caller.user_id) as sub:
            feed = Feed(services, sub, caller.user_id, since)
            sub.subscriber.on_overflow = lambda: handle.close(CLOSE_TRY_AGAIN)
            return await _serve_socket(socket, feed, handle)
    except TooManyStreams as exc:  # the user's streams on other nodes, or opened meanwhile
        await socket.send_data(error_event(exc.code, exc.detail))
        return CLOSE_TOO_MANY_STREAMS
    except StreamUnavailable as exc:
        log.warning("stream closed: %s", exc)
        return CLOSE_UNAVAILABLE
    except Exception:  # log it with the request id; the client resumes with since
        log.exception("stream failed [request %s]", socket.scope.get("state", {}).get("request_id"))
        return CLOSE_UNAVAILABLE
    finally:
        OPEN_WS.dec()
        await services.hub.close(handle)


QUERY_CREDENTIALS_REFUSED = (
    "tokens are never accepted in the query string (it ends up in logs and histories): "
    "send 'Authorization: Bearer …' or a first frame {'type': 'auth', 'token': …}"
)
TOKEN_PARAMS = (b"token", b"access_token")


def token_in_query(scope: Any) -> bool:
    """Whether the query string carries a token parameter."""
    query: bytes = scope.get("query_string", b"")
    return any(pair.split(b"=", 1)[0] in TOKEN_PARAMS for pair in query.split(b"&"))


async def _close_if_revoked_meanwhile(
    services: Services, caller: Caller, handle: StreamHandle
) -> None:
    """A revocation that landed between authenticating and registering with the hub found
    no stream to close: check once more, now that later revocations will find it."""
    async with services.db.read() as conn:
        if caller.token_hash is not None:
            user_id = await store.find_token_user(conn, caller.token_hash, token_cutoff(services))
            valid = user_id == caller.user_id
        else:
            valid = await store.get_user(conn, caller.user_id) is not None
    if not valid:
        handle.close(CLOSE_REVOKED)


async def _authenticate_socket(
    socket: WebSocket[Any, Any, Any], services: Services, resume: Resume
) -> tuple[Caller, Resume]:
    authorization = header(socket.scope, b"authorization")
    if authorization:
        return await authenticate(services, authorization, client_address(socket.scope)), resume
    async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
        frame = await socket.receive_data("text")
    try:
        auth = _decode_auth(frame)
    except msgspec.DecodeError:
        raise NotAuthenticated("the first frame must be {'type': 'auth', 'token': …}") from None
    caller = await authenticate(services, f"Bearer {auth.token}", client_address(socket.scope))
    return caller, resume.overridden_by(Resume(auth.since, auth.after_id))


async def _serve_socket(
    socket: WebSocket[Any, Any, Any], feed: Feed, handle: StreamHandle
) -> int | None:
    """Read client frames here while a ``Sender`` sends events; return the close code to
    send (None when the client is gone).

    A revocation or an overflow resolves ``handle.closed``, and a sender that fails (a send
    to a client that is gone, a database read) ends the stream too: either interrupts the
    read below, because the close cannot wait for the client to send something (granian
    sends the close frame only once the handler returns; a client that stopped reading may
    never send again).
    """
    reader = asyncio.current_task()
    assert reader is not None
    state = {"serving": True, "interrupted": False}

    def interrupt(_: object = None) -> None:
        if state["serving"]:
            state["interrupted"] = True
            reader.cancel()

    sender = Sender(socket, feed, on_failure=interrupt)
    handle.closed.add_done_callback(interrupt)
    try:
        return await _read_frames(socket, handle.user_id)
    except asyncio.CancelledError:
        if not state["interrupted"] or reader.uncancel() > 0:
            raise  # cancelled from outside too (shutdown)
        return handle.closed.result() if handle.closed.done() else CLOSE_UNAVAILABLE
    finally:
        state["serving"] = False
        handle.closed.remove_done_callback(interrupt)
        await sender.stop()


class Sender:
    """Sends a feed's events over a socket, running a task only while there is something
    to send.

    A task that waited on an idle stream held a new future and two coroutines from one
    event to the next: with many sockets and deliveries, many such objects lived long
    enough to reach the garbage collector's oldest generation and set off frequent full
    collections, each one slow with many streams open (see docs/architecture.md and
    docs/performance.md). A task that ends when the queue is empty leaves nothing
    behind: its objects are freed as soon as it returns.
    """

    __slots__ = ("_feed", "_on_failure", "_socket", "_stopped", "_task")

    def __init__(
        self, socket: WebSocket[Any, Any, Any], feed: Feed, on_failure: Callable[[], None]
    ) -> None:
        self._socket = socket
        self._feed = feed
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        feed.on_event(self.wake)
        self.wake()  # the replay, and any event queued before this

    def wake(self) -> None:
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._send_due())

    async def _send_due(self) -> None:
        try:
            while (event := await self._feed.poll()) is not None:
                await self._socket.send_data(event.payload, mode="text")
                DELIVERED_WS.inc()
        except (OSError, WebSocketDisconnect):  # the client is gone: end the stream
            self._on_failure()
        except Exception:  # a failed database read: end the stream, the client resumes
            log.exception("stream sender failed")
            self._on_failure()
        finally:
            self._task = None  # at once, not in a done-callback: no wake-up can be missed

    async def stop(self) -> None:
        self._stopped = True
        await cancel_and_wait(self._task)


async def _read_frames(socket: WebSocket[Any, Any, Any], user_id: int) -> int | None:
    """Handle client frames (typing), answering bad ones with an error event; return 1009
    for an oversized frame."""
    services = services_of(socket)
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data: str | bytes = message.get("text") or message.get("bytes") or ""  # type: ignore[assignment]
        size = len(data.encode() if isinstance(data, str) else data)
        if size > MAX_FRAME_BYTES:
            return CLOSE_TOO_BIG
        if (error := await _handle_frame(services, user_id, data)) is not None:
            await socket.send_data(error)


async def _handle_frame(services: Services, user_id: int, data: str | bytes) -> str | None:
    """Relay a typing frame (a repeated auth frame is harmless); the error event to answer
    anything else with, or None."""
    try:
        frame = _decode_frame(data)
        if isinstance(frame, TypingFrame):
            await relay_typing(services, user_id, frame.to)
    except ChatError as exc:
        return error_event(exc.code, exc.detail)
    except msgspec.DecodeError as exc:
        return error_event("unsupported-frame", _frame_problem(data, exc))
    return None


def _frame_problem(data: str | bytes, exc: msgspec.DecodeError) -> str:
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return "frames must be JSON: {'type': 'typing', 'to': <user_id>} or {'type': 'auth', …}"
    if isinstance(decoded, dict) and decoded.get("type") == "typing":
        return f"invalid typing frame: {exc}"
    return (
        "send messages with POST /api/v1/chats/; the stream accepts only"
        " {'type': 'typing', 'to': <user_id>} and {'type': 'auth', …} frames"
    )


async def _close(socket: WebSocket[Any, Any, Any], code: int) -> None:
    with contextlib.suppress(Exception):  # the peer may already be gone (or never reads)
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await socket.close(code)


# ---------------------------------------------------------------- Server-Sent Events


@route.get("/api/v1/stream", errors=(406,))
async def stream_sse(
    request: Request[Any, Any, Any],
    services: Services,
    caller: Caller,
    query: StreamQuery,
    headers: StreamHeaders,
) -> ServerSentEvent:
    """Live events as Server-Sent Events (Accept: text/event-stream); resumable.

    Each event's ``id:`` is its position: resume with Last-Event-ID (what EventSource sends
    by itself) or ``since``; ``after_id`` resumes after a message id."""
    if "text/event-stream" not in request.headers.get("accept", ""):
        raise NotAcceptable("Ask for 'Accept: text/event-stream', or open a WebSocket here")
    if token_in_query(request.scope):
        raise InvalidInput({"token": [QUERY_CREDENTIALS_REFUSED]})
    services.hub.admit(caller.user_id)
    resume = Resume(query.since, query.after_id)
    if headers.last_event_id is not None:
        resume = Resume(since=headers.last_event_id)
    since = await resume.position(services, caller.user_id)
    return ServerSentEvent(_sse_events(services, caller, since))


async def _sse_events(
    services: Services, caller: Caller, since: int
) -> AsyncIterator[ServerSentEventMessage]:
    handle = StreamHandle(caller.user_id, caller.token_hash)
    try:
        await services.hub.open(handle)
    except TooManyStreams:  # another stream of the user's opened since the route admitted it
        return
    OPEN_SSE.inc()
    try:
        await _close_if_revoked_meanwhile(services, caller, handle)
        async with subscription(services.events.channels, caller.user_id) as sub:
            feed = Feed(services, sub, caller.user_id, since)
            sub.subscriber.on_overflow = lambda: handle.close(CLOSE_TRY_AGAIN)
            async for message in _sse_messages(feed, handle):
                yield message
    except StreamUnavailable as exc:
        log.warning("stream closed: %s", exc)
        return
    finally:
        OPEN_SSE.dec()
        await services.hub.close(handle)


async def _sse_messages(feed: Feed, handle: StreamHandle) -> AsyncIterator[ServerSentEventMessage]:
    """Events as SSE messages, a keep-alive comment when idle, until the stream must end."""
    pending: asyncio.Future[StreamEvent] | None = None
    try:
        while not handle.closed.done():
            pending = pending or asyncio.ensure_future(feed.next())
            waiting: set[asyncio.Future[Any]] = {pending, handle.closed}
            await asyncio.wait(
                waiting,
                timeout=SSE_KEEPALIVE_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not pending.done():
                if not handle.closed.done():
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            event, pending = pending.result(), None
            yield ServerSentEventMessage(data=event.payload, id=event.pos)
            DELIVERED_SSE.inc()
    finally:
        if pending is not None:
            pending.cancel()


HANDLERS = [stream_socket, stream_sse]
