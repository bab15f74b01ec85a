"""/api/v1/auth/token/ — log in for a token, revoke it; /api/v1/auth/tokens/ — list the
caller's tokens, revoke one or all the others."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router

from chatserver import actions, store
from chatserver.api import route
from chatserver.api.deps import Caller, client_address
from chatserver.errors import InvalidInput
from chatserver.schemas import Login, TokenInfo, TokenList, TokenOut, TokenPath, to_datetime
from chatserver.services import Services
from chatserver.views import user_out


@route.post("/", status_code=200, errors=(401, 429), limit="token")
async def issue_token(services: Services, request: Request[Any, Any, Any], body: Login) -> TokenOut:
    """Exchange a username (or email) and password for a Bearer token.

    After 10 consecutive failed checks for one account (or one unknown name), attempts get
    429 with Retry-After, without the password being checked, for 1 s, then 2 s, 4 s …;
    a token unused for 30 days expires; a user's 101st token revokes their oldest."""
    token, user = await actions.issue_token(services, body, client_address(request.scope))
    online = await services.hub.presence.online(user.id)
    return TokenOut(token=token, user=user_out(user, viewer_id=user.id, online=online))


@route.delete("/", errors=(400,))
async def revoke_token(services: Services, caller: Caller) -> None:
    """Revoke the Bearer token that made this request."""
    if caller.token_hash is None:
        raise InvalidInput({"authorization": ["revoke needs a Bearer token, not Basic"]})
    await actions.revoke_token(services, caller.user_id, caller.token_hash)


@route.get("/")
async def list_tokens(services: Services, caller: Caller) -> TokenList:
    """The caller's live tokens: ids and times, never the tokens themselves."""
    async with services.db.read() as conn:
        rows = await store.list_tokens(conn, caller.user_id, actions.token_cutoff(services))
    return TokenList([_token_info(row, caller) for row in rows])


@route.delete("/{token_id:int}/", errors=(404,))
async def revoke_token_by_id(services: Services, caller: Caller, path: TokenPath) -> None:
    """Revoke one of the caller's tokens (its streams close with 4401 on every node)."""
    await actions.revoke_token_by_id(services, caller.user_id, path.token_id)


@route.delete("/")
async def revoke_other_tokens(services: Services, caller: Caller) -> None:
    """Revoke every token of the caller except the one making this request."""
    await actions.revoke_other_tokens(services, caller.user_id, caller.token_hash)


def _token_info(row: store.TokenRow, caller: Caller) -> TokenInfo:
    created_at = to_datetime(row.created_at)
    assert created_at is not None
    current = row.token_hash == caller.token_hash
    return TokenInfo(row.id, created_at, to_datetime(row.last_used_at), current)


router = Router("/api/v1/auth/token", route_handlers=[issue_token, revoke_token], tags=["auth"])
tokens_router = Router(
    "/api/v1/auth/tokens",
    route_handlers=[list_tokens, revoke_token_by_id, revoke_other_tokens],
    tags=["auth"],
)
