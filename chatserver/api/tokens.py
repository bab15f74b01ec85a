"""/api/v1/auth/token/ — log in for a token, revoke it."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, delete, post
from litestar.openapi.spec import Example

from chatserver import actions
from chatserver.api import docs
from chatserver.api.body import JsonInput
from chatserver.api.deps import caller_of, services_of
from chatserver.errors import InvalidInput
from chatserver.schemas import Login, TokenOut
from chatserver.views import user_out

LOGIN_EXAMPLE = Example(summary="Log in", value={"username": "john", "password": "s3cret-pass"})


LOGIN = JsonInput(Login, LOGIN_EXAMPLE)


@post(
    "/",
    status_code=200,
    responses={**docs.WITH_BODY, **docs.AUTHED},
    security=[],
    operation_class=docs.operation_class(body=LOGIN.request_body()),
)
async def issue_token(request: Request[Any, Any, Any]) -> TokenOut:
    """Exchange a username (or email) and password for a Bearer token."""
    data = await LOGIN.read(request)
    services = services_of(request)
    token, user = await actions.issue_token(services, data)
    online = await services.hub.presence.online(user.id)
    return TokenOut(token=token, user=user_out(user, viewer_id=user.id, online=online))


@delete("/", status_code=204, responses={**docs.WITH_QUERY, **docs.AUTHED})
async def revoke_token(request: Request[Any, Any, Any]) -> None:
    """Revoke the Bearer token that made this request."""
    services = services_of(request)
    caller = await caller_of(request, services)
    if caller.token_hash is None:
        raise InvalidInput({"authorization": ["revoke needs a Bearer token, not Basic"]})
    await actions.revoke_token(services, caller.user_id, caller.token_hash)


HANDLERS = docs.summarized(issue_token, revoke_token)
router = Router("/api/v1/auth/token", route_handlers=HANDLERS, tags=["auth"])
