"""A small pure-ASGI middleware: request ids, request start time, JSON-only bodies."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Awaitable
from typing import Any

import msgspec
from litestar.types import ASGIApp, Receive, Send

from chatserver.problems import PROBLEM_TYPE_BASE, Problem

# An incoming X-Request-ID is kept when it is short and plain (so logs cannot be forged).
REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Litestar's scope TypedDicts do not admit our "state" keys; plain dicts keep this readable.
Scope = dict[str, Any]


class RequestContextMiddleware:
    """Gives every request an id (echoed in ``X-Request-ID``) and its start time,
    and answers 415 to a body that is not JSON before any route reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        if scope["type"] == "websocket":
            # Logs still name the request; the app is called directly, so a long-lived
            # socket keeps no frame of this middleware (memory per idle socket).
            scope.setdefault("state", {})["request_id"] = _request_id(scope)
        return self.app(scope, receive, send)

    async def _http(self, scope: Any, receive: Receive, send: Send) -> None:
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = time.perf_counter()
        header = (b"x-request-id", request_id.encode())
        if not _acceptable_body(scope):
            await _unsupported_media_type(send, header)
            return

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


# Ids are a random per-process prefix and a counter: unique across processes and restarts,
# and far cheaper per request than fresh random bytes.
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count(1)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and REQUEST_ID_RE.fullmatch(value):
            return bytes(value).decode()
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


def _acceptable_body(scope: Scope) -> bool:
    """A POST/PUT/PATCH body must be JSON; a request without a body is left to the route."""
    if scope["method"] not in BODY_METHODS:
        return True
    content_type, length = b"", b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"content-length":
            length = value.strip()
    if content_type:
        return content_type == b"application/json" or content_type.endswith(b"+json")
    return length in (b"", b"0")


async def _unsupported_media_type(send: Any, request_id: tuple[bytes, bytes]) -> None:
    body = msgspec.json.encode(
        Problem(
            type=PROBLEM_TYPE_BASE + "unsupported-media-type",
            title="Unsupported media type",
            status=415,
            detail="Send the request body as JSON with 'Content-Type: application/json'",
        )
    )
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        request_id,
    ]
    await send({"type": "http.response.start", "status": 415, "headers": headers})
    await send({"type": "http.response.body", "body": body})
