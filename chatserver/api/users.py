"""/api/v1/users/ — sign up, look users up, delete your own account."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType

from chatserver import actions, store
from chatserver.api import docs
from chatserver.api.body import JsonInput
from chatserver.api.deps import JsonBody, caller_of, services_of
from chatserver.api.query import Param, Query
from chatserver.errors import InvalidInput, NotFound
from chatserver.schemas import MAX_ID, NewUser, UserOut
from chatserver.views import user_out

SIGN_UP_EXAMPLE = Example(
    summary="Sign up",
    value={"username": "john", "email": "john@example.com", "password": "s3cret-pass"},
)


NEW_USER = JsonInput(NewUser, SIGN_UP_EXAMPLE)


@post(
    "/",
    status_code=201,
    responses={**docs.WITH_BODY, 409: docs.CONFLICT},
    security=[],
    operation_class=docs.operation_class(body=NEW_USER.request_body()),
)
async def create_user(request: Request[Any, Any, Any]) -> UserOut:
    """Create a user (no authentication needed)."""
    data = await NEW_USER.read(request)
    services = services_of(request)
    user = await actions.create_user(services, data)
    return user_out(user, viewer_id=user.id, online=False)


GET_QUERY = Query(
    Param("user_id", OpenAPIType.INTEGER, minimum=1, maximum=MAX_ID, description="A user's id"),
    Param("username", OpenAPIType.STRING, max_length=254, description="Exact username, any case"),
)


USER_RESPONSE = ResponseSpec(
    data_container=UserOut,
    description="The user (with their email only when it is the caller)",
    generate_examples=False,
    examples=[
        Example(
            summary="Another user",
            value={
                "id": 2,
                "username": "jane",
                "date_joined": "2015-12-25T09:13:40Z",
                "last_seen_at": "2015-12-25T09:14:02Z",
                "online": False,
            },
        )
    ],
)
_encode = msgspec.json.Encoder().encode


@get(
    "/",
    responses={200: USER_RESPONSE, **docs.WITH_QUERY, **docs.AUTHED, 404: docs.NOT_FOUND},
    operation_class=docs.operation_class(parameters=GET_QUERY.openapi()),
)
async def get_user(request: Request[Any, Any, Any]) -> JsonBody:
    """Get a user by id or username; with neither, the caller."""
    services = services_of(request)
    caller = await caller_of(request, services)
    q = GET_QUERY.parse(request.scope)
    user_id, username = q["user_id"], q["username"]
    if user_id is not None and username is not None:
        raise InvalidInput({"user_id": ["give user_id or username, not both"]})
    async with services.db.read() as conn:
        if username is not None:
            user = await store.find_user_by_username(conn, username.casefold())
        else:
            user = await store.get_user(conn, caller.user_id if user_id is None else user_id)
    if user is None:
        raise NotFound("There is no such user")
    online = await services.hub.presence.online(user.id)
    return JsonBody(_encode(user_out(user, viewer_id=caller.user_id, online=online)))


@delete("/", status_code=204, responses=docs.AUTHED)
async def delete_me(request: Request[Any, Any, Any]) -> None:
    """Delete the caller's account: tokens, received messages; sent messages stay."""
    services = services_of(request)
    caller = await caller_of(request, services)
    await actions.delete_user(services, caller.user_id)


HANDLERS = docs.summarized(create_user, get_user, delete_me)
router = Router("/api/v1/users", route_handlers=HANDLERS, tags=["users"])
