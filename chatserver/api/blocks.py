"""/api/v1/blocks/ — the users I block: they cannot send to me, nor see my presence.

A block hides nothing I already have: my history with them stays, for both of us.
"""

from __future__ import annotations

from datetime import datetime

from litestar import Router

from chatserver import actions, store
from chatserver.api import route
from chatserver.api.deps import Caller
from chatserver.schemas import BlockList, BlockOut, PeerPath, to_datetime
from chatserver.services import Services


@route.get("/")
async def list_blocks(services: Services, caller: Caller) -> BlockList:
    """Everyone I block, the latest first."""
    async with services.db.read() as conn:
        rows = await store.list_blocks(conn, caller.user_id)
    return BlockList(blocks=[BlockOut(row.blocked_id, _at(row.since)) for row in rows])


@route.put("/{user_id:int}", errors=(404,))
async def block(services: Services, caller: Caller, path: PeerPath) -> None:
    """Block a user (idempotent: blocking again changes nothing, ``since`` stays).

    Their sends to me are refused with 403 (nothing stored); they see my ``last_seen_at``
    as null and ``online`` as false, and get no presence events of mine. 400 for
    myself, 404 for no such user."""
    await actions.block_user(services, caller.user_id, path.user_id)


@route.delete("/{user_id:int}", errors=(404,))
async def unblock(services: Services, caller: Caller, path: PeerPath) -> None:
    """Unblock a user (also when not blocked). 400 for myself, 404 for no such user."""
    await actions.unblock_user(services, caller.user_id, path.user_id)


def _at(micros: int) -> datetime:
    at = to_datetime(micros)
    assert at is not None
    return at


router = Router("/api/v1/blocks", route_handlers=[list_blocks, block, unblock], tags=["blocks"])
