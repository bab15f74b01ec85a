"""/api/v1/auth/token/ — log in for a token, revoke it."""

from __future__ import annotations

from litestar import Router

from chatserver import actions
from chatserver.api import route
from chatserver.api.deps import Caller
from chatserver.errors import InvalidInput
from chatserver.schemas import Login, TokenOut
from chatserver.services import Services
from chatserver.views import user_out


@route.post("/", status_code=200, errors=(401,), limit="token")
async def issue_token(services: Services, body: Login) -> TokenOut:
    """Exchange a username (or email) and password for a Bearer token."""
    token, user = await actions.issue_token(services, body)
    online = await services.hub.presence.online(user.id)
    return TokenOut(token=token, user=user_out(user, viewer_id=user.id, online=online))


@route.delete("/", errors=(400,))
async def revoke_token(services: Services, caller: Caller) -> None:
    """Revoke the Bearer token that made this request."""
    if caller.token_hash is None:
        raise InvalidInput({"authorization": ["revoke needs a Bearer token, not Basic"]})
    await actions.revoke_token(services, caller.user_id, caller.token_hash)


router = Router("/api/v1/auth/token", route_handlers=[issue_token, revoke_token], tags=["auth"])
