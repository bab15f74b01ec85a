"""What the routes share: the app's services and the authenticated caller (provided to
handlers by ``route.py``, and used directly by the WebSocket route)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from litestar import Request
from litestar.connection import ASGIConnection

from chatserver import actions, auth, store
from chatserver.errors import NotAuthenticated, RateLimited
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


# What each rule counts, for the 429's detail.
RULE_WORDS = {
    "send": "writes",
    "read": "reads",
    "signup": "sign-ups from this address",
    "token": "token requests from this address",
}


async def count_request(s: Services, scope: Any, rule: str, key: object) -> None:
    """Count the request against ``rule`` for ``key`` (a user id or a client address); the
    decision's headers go on the response (``middleware.py``); over the limit: 429."""
    limits = s.limits
    decision = await limits.hit(rule, key) if limits.shared else limits.hit_here(rule, key)
    if decision is None:
        return
    scope["state"]["ratelimit"] = decision
    if not decision.allowed:
        words = RULE_WORDS.get(rule, "requests")
        raise RateLimited(
            f"Too many {words}: retry in {decision.retry_after} s", decision.retry_after
        )


def client_address(scope: Any) -> str:
    """The peer's address (behind a proxy, the server's --forwarded-allow-ips decides it)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
