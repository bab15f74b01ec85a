"""What the routes share: the app's services and the authenticated caller.

Routes call these directly instead of declaring Litestar dependencies: measured on the inbox
route, resolving two dependencies cost about a fifth of the request rate (each one is a
signature model and a kwargs pass per request), more than everything our own code does.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from litestar import Request
from litestar.connection import ASGIConnection

from chatserver import auth, store
from chatserver.errors import BadCredentials, NotAuthenticated
from chatserver.services import Services


class Caller(NamedTuple):
    """Who made the request; ``token_hash`` is set when they used a Bearer token."""

    user_id: int
    token_hash: str | None = None


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services


async def authenticate(s: Services, header: str | None) -> Caller:
    """Resolve an Authorization header to a caller, or raise NotAuthenticated."""
    credentials = auth.parse_authorization(header)
    if isinstance(credentials, auth.BearerCredentials):
        return await _bearer(s, credentials.token_hash)
    async with s.db.read() as conn:
        user = await store.find_user_by_login(conn, credentials.username.casefold())
    hashed = user.password_hash if user else None
    if not await auth.verify_password(hashed, credentials.password) or user is None:
        raise BadCredentials()
    return Caller(user.id)


async def _bearer(s: Services, token_hash: str) -> Caller:
    user_id = s.tokens.get(token_hash)
    if user_id is None:
        async with s.db.read() as conn:
            user_id = await store.find_token_user(conn, token_hash)
        if user_id is None:
            raise NotAuthenticated("The token is invalid or has been revoked")
        s.tokens.put(token_hash, user_id)
    return Caller(user_id, token_hash)


async def caller_of(request: Request[Any, Any, Any], services: Services) -> Caller:
    """The authenticated caller of a request, or NotAuthenticated (401)."""
    return await authenticate(services, header(request.scope, b"authorization"))


def header(scope: Any, name: bytes) -> str | None:
    """One request header (``name`` in lower case), or None.

    Scanning the raw headers is cheaper than building Litestar's Headers object for one."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class JsonBody:
    """A JSON body already encoded, returned by the hot routes as a bare ASGI app.

    Litestar's ``Response`` builds a header object, an ``ASGIResponse`` and checks the
    media type on every request; measured on the inbox route that was about 8 % of its
    time. A route returning this documents its body with ``responses=`` instead.
    """

    __slots__ = ("body", "status")

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def took_ms(request: Request[Any, Any, Any]) -> int:
    """Whole milliseconds since the request arrived (set by the request middleware)."""
    started = request.scope.get("state", {}).get("started", time.perf_counter())
    return int((time.perf_counter() - started) * 1000)
