"""/api/v1/users/ — sign up, look users up, delete your own account."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Router, delete, get, post
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter

from chatserver import actions, store
from chatserver.api import docs
from chatserver.api.deps import caller_of, services_of, strict_body
from chatserver.errors import InvalidInput, NotFound
from chatserver.schemas import MAX_ID, NewUser, UserOut, bad_text
from chatserver.views import user_out

SIGN_UP_EXAMPLE = Example(
    summary="Sign up",
    value={"username": "john", "email": "john@example.com", "password": "s3cret-pass"},
)


@post(
    "/",
    status_code=201,
    responses={**docs.WITH_BODY, 409: docs.CONFLICT},
    security=[],
    before_request=strict_body(NewUser),
)
async def create_user(
    request: Request[Any, Any, Any], data: Annotated[NewUser, Body(examples=[SIGN_UP_EXAMPLE])]
) -> UserOut:
    """Create a user (no authentication needed)."""
    services = services_of(request)
    user = await actions.create_user(services, data)
    return user_out(user, viewer_id=user.id, online=False)


@get("/", responses={**docs.WITH_QUERY, **docs.AUTHED, 404: docs.NOT_FOUND})
async def get_user(
    request: Request[Any, Any, Any],
    user_id: Annotated[int | None, Parameter(ge=1, le=MAX_ID, description="A user's id")] = None,
    username: Annotated[
        str | None, Parameter(max_length=254, description="Exact username, any case")
    ] = None,
) -> UserOut:
    """Get a user by id or username; with neither, the caller."""
    services = services_of(request)
    caller = await caller_of(request)
    if user_id is not None and username is not None:
        raise InvalidInput({"user_id": ["give user_id or username, not both"]})
    if username is not None and (why := bad_text(username)) is not None:
        raise InvalidInput({"username": [why]})
    async with services.db.read() as conn:
        if username is not None:
            user = await store.find_user_by_username(conn, username.casefold())
        else:
            user = await store.get_user(conn, caller.user_id if user_id is None else user_id)
    if user is None:
        raise NotFound("There is no such user")
    online = await services.hub.presence.online(user.id)
    return user_out(user, viewer_id=caller.user_id, online=online)


@delete("/", status_code=204, responses=docs.AUTHED)
async def delete_me(request: Request[Any, Any, Any]) -> None:
    """Delete the caller's account: tokens, received messages; sent messages stay."""
    services = services_of(request)
    caller = await caller_of(request)
    await actions.delete_user(services, caller.user_id)


HANDLERS = docs.summarized(create_user, get_user, delete_me)
router = Router("/api/v1/users", route_handlers=HANDLERS, tags=["users"])
