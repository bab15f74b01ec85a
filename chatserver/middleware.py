"""The app's entry: every request gets an id (echoed in ``X-Request-ID``) and its start time;
every response the headers that keep browsers and caches safe, and the rate-limit fields of
its route (set by ``api/deps.count_request``)."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from litestar.types import ASGIApp, Receive, Send

from chatserver.logs import REQUEST_ID

# An incoming X-Request-ID is kept when it is short and plain (so logs cannot be forged).
REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
# Litestar's scope TypedDicts do not admit our "state" keys; plain dicts keep this readable.
Scope = dict[str, Any]
# Told of every finished HTTP request: (scope, status, seconds). Metrics and the JSON access
# log are observers; with none, a request pays nothing for them.
Observer = Callable[[Any, int, float], None]


class RequestContext:
    """Wraps the whole app (``app.ChatApp``), outside Litestar's router and error handler,
    so every response carries the id, a 404 or 405 from the router too.

    Not a Litestar route middleware: one of those also wraps every route in a second error
    handler layer, which every request would pay for."""

    def __init__(self, app: ASGIApp, observers: Sequence[Observer] = ()) -> None:
        self.app = app
        self.observers = tuple(observers)

    def __call__(self, scope: Any, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        if scope["type"] == "websocket":
            # Logs still name the request; the app is called directly, so a long-lived
            # socket keeps no frame of this wrapper (memory per idle socket).
            request_id = scope.setdefault("state", {})["request_id"] = _request_id(scope)
            REQUEST_ID.set(request_id)
        return self.app(scope, receive, send)

    async def _http(self, scope: Any, receive: Receive, send: Send) -> None:
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = started = time.perf_counter()
        REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        status = 500  # unless a response starts

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_our_headers(message.get("headers", ()), header, state)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.observers:
                seconds = time.perf_counter() - started
                for observe in self.observers:
                    observe(scope, status, seconds)


# API answers are per caller: no cache may keep them, no browser may guess their type,
# and no link followed from a page may carry its address on.
SAFE_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
NO_STORE = (b"cache-control", b"no-store")
SAFE_NO_STORE = (*SAFE_HEADERS, NO_STORE)


def _with_our_headers(
    headers: Sequence[tuple[bytes, bytes]], request_id: tuple[bytes, bytes], state: Scope
) -> list[tuple[bytes, bytes]]:
    """A response's headers with the request id, the safe headers (``no-store`` unless the
    route set its own caching), and the route's rate-limit fields."""
    cached = any(name.lower() == b"cache-control" for name, _ in headers)
    out = [*headers, request_id, *(SAFE_HEADERS if cached else SAFE_NO_STORE)]
    if (decision := state.get("ratelimit")) is not None:
        out += decision.headers()
    return out


# Ids are a random per-process prefix and a counter: unique across processes and restarts,
# and far cheaper per request than fresh random bytes.
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count(1)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and REQUEST_ID_RE.fullmatch(value):
            return bytes(value).decode()
    return f"{_ID_PREFIX}-{next(_id_counter):x}"
