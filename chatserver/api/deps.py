"""What the routes share: the app's services and the authenticated caller (provided to
handlers by ``route.py``, and used directly by the WebSocket route)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from litestar import Request
from litestar.connection import ASGIConnection

from chatserver import actions, auth, store
from chatserver.errors import NotAuthenticated
from chatserver.services import Services


class Caller(NamedTuple):
    """Who made the request; ``token_hash`` is set when they used a Bearer token."""

    user_id: int
    token_hash: str | None = None


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services


async def authenticate(s: Services, header: str | None, client: str) -> Caller:
    """Resolve an Authorization header to a caller, or raise NotAuthenticated (or
    TooManyAttempts: Basic credentials go through the login throttle). ``client``: the
    address whose turn a password check takes in the hash gate."""
    credentials = auth.parse_authorization(header)
    if isinstance(credentials, auth.BearerCredentials):
        return await _bearer(s, credentials.token_hash)
    user = await actions.log_in(s, credentials.username, credentials.password, client)
    return Caller(user.id)


async def _bearer(s: Services, token_hash: str) -> Caller:
    user_id = s.tokens.get(token_hash)
    if user_id is None:
        async with s.db.read() as conn:
            user_id = await store.find_token_user(conn, token_hash, actions.token_cutoff(s))
        if user_id is None:
            raise NotAuthenticated("The token is invalid, expired or revoked")
        s.tokens.put(token_hash, user_id)
    s.token_use.note(token_hash)
    return Caller(user_id, token_hash)


def client_address(scope: Any) -> str:
    """The peer's address as the ASGI server saw it (the proxy's, behind one)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def header(scope: Any, name: bytes) -> str | None:
    """One request header (``name`` in lower case), or None.

    Scanning the raw headers is cheaper than building Litestar's Headers object for one."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def took_ms(request: Request[Any, Any, Any]) -> int:
    """Whole milliseconds since the request arrived (set by the request middleware)."""
    started = request.scope.get("state", {}).get("started", time.perf_counter())
    return int((time.perf_counter() - started) * 1000)
