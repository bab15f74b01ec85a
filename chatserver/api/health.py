"""/healthz — is the database answering (and Redis, when configured)? And the OpenAPI
document at /openapi.json."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from litestar import Request, Response

from chatserver import actions
from chatserver.api import route
from chatserver.broker import ChatChannels
from chatserver.services import Services

log = logging.getLogger("chatserver")


class Health(msgspec.Struct):
    """Whether the server can answer."""

    status: str
    database: str
    # Only when Redis is configured. "down" does not make the node unhealthy: sends and
    # reads keep working, and streams catch up when it is back.
    redis: str | msgspec.UnsetType = msgspec.UNSET


@route.get("/healthz", tags=["operations"], documents=Health)
async def healthz(services: Services) -> Health | Response[Health]:
    """200 when the database answers reads and commits writes, 503 when it does not; Redis
    is reported, not required."""
    redis = await _redis_state(services)
    try:
        await asyncio.wait_for(services.db.ping(), timeout=2)
        await asyncio.wait_for(actions.check_writes(services), timeout=2)
    except Exception as exc:  # any failure to answer is "unhealthy", never a 500
        log.warning("health check failed: %s", exc)
        return Response(
            Health(status="unavailable", database="down", redis=redis),
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return Health(status="ok", database="up", redis=redis)


async def _redis_state(services: Services) -> str | msgspec.UnsetType:
    channels = services.events.channels
    if not isinstance(channels, ChatChannels):
        return msgspec.UNSET
    up = await channels.ping_broker()
    return msgspec.UNSET if up is None else "up" if up else "down"


@route.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """The OpenAPI 3.1 document (also at /docs/openapi.json, beside the interactive docs)."""
    return Response(request.app.openapi_schema.to_schema())


HANDLERS = [healthz, openapi_document]
