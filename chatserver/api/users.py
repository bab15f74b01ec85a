"""/api/v1/users/ — sign up, look users up, delete your own account."""

from __future__ import annotations

from litestar import Router

from chatserver import actions, store
from chatserver.api import route
from chatserver.api.deps import Caller
from chatserver.errors import InvalidInput, NotFound
from chatserver.schemas import DeleteMeQuery, NewUser, UserOut, UserQuery
from chatserver.services import Services
from chatserver.views import user_out


@route.post("/", status_code=201, errors=(409,))
async def create_user(services: Services, body: NewUser) -> UserOut:
    """Create a user (no authentication needed)."""
    user = await actions.create_user(services, body)
    return user_out(user, viewer_id=user.id, online=False)


@route.get("/", errors=(404,))
async def get_user(services: Services, caller: Caller, query: UserQuery) -> UserOut:
    """Get a user by id or username; with neither, the caller.

    The email is shown only to its owner; someone who blocks the caller shows
    ``last_seen_at`` null and ``online`` false."""
    if query.user_id is not None and query.username is not None:
        raise InvalidInput({"user_id": ["give user_id or username, not both"]})
    async with services.db.read() as conn:
        if query.username is not None:
            user = await store.find_user_by_username(conn, query.username.casefold())
        else:
            user_id = caller.user_id if query.user_id is None else query.user_id
            user = await store.get_user(conn, user_id)
        if user is None:
            raise NotFound("There is no such user")
        hidden = user.id != caller.user_id and await store.blocks(conn, user.id, caller.user_id)
    online = not hidden and await services.hub.presence.online(user.id)
    return user_out(user, viewer_id=caller.user_id, online=online, hidden=hidden)


@route.delete("/")
async def delete_me(services: Services, caller: Caller, query: DeleteMeQuery) -> None:
    """Delete the caller's account: tokens, received messages; sent messages stay."""
    if query.user_id is not None:
        raise InvalidInput({"user_id": ["you can only delete your own account (send no user_id)"]})
    await actions.delete_user(services, caller.user_id)


router = Router("/api/v1/users", route_handlers=[create_user, get_user, delete_me], tags=["users"])
