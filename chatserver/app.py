"""``create_app(settings)``: routes, plugins, error handlers and the lifespan. No globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from chatserver import store
from chatserver.api import chats, health, tokens, users
from chatserver.api.deps import DEPENDENCIES
from chatserver.auth import TokenCache
from chatserver.config import Settings
from chatserver.db import open_database
from chatserver.events import Events
from chatserver.middleware import RequestContextMiddleware
from chatserver.problems import EXCEPTION_HANDLERS
from chatserver.services import Services, now_us

log = logging.getLogger("chatserver")

PURGE_INTERVAL_SECONDS = 3600


def create_app(settings: Settings) -> Litestar:
    channels = ChannelsPlugin(backend=_channels_backend(settings), arbitrary_channels_allowed=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = await open_database(settings.database_url)
        services = Services(
            settings, db, Events(channels), TokenCache(settings.token_cache_seconds)
        )
        app.state.services = services
        purge = asyncio.create_task(_purge_idempotency_keys(services))
        try:
            yield
        finally:
            purge.cancel()
            await db.close()

    return Litestar(
        route_handlers=[
            users.router,
            tokens.router,
            chats.router,
            health.healthz,
            health.openapi_document,
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(RequestContextMiddleware)],
        plugins=[channels],
        lifespan=[lifespan],
        openapi_config=_openapi_config(),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
        logging_config=None,
    )


def _channels_backend(settings: Settings) -> ChannelsBackend:
    if settings.redis_url is None:
        return MemoryChannelsBackend()
    from litestar.channels.backends.redis import RedisChannelsPubSubBackend
    from redis.asyncio import Redis

    return RedisChannelsPubSubBackend(redis=Redis.from_url(settings.redis_url))


async def _purge_idempotency_keys(services: Services) -> None:
    """Forget Idempotency-Keys older than their time to live, once an hour."""
    ttl_us = services.settings.idempotency_ttl_seconds * 1_000_000
    while True:
        try:
            async with services.db.transaction() as conn:
                removed = await store.delete_idempotency_keys_before(conn, now_us() - ttl_us)
            if removed:
                log.info("forgot %d expired idempotency keys", removed)
        except Exception:  # a failed purge must not stop the server; try again later
            log.exception("purging idempotency keys failed")
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


def _openapi_config() -> OpenAPIConfig:
    schemes: dict[str, Any] = {
        "bearer": SecurityScheme(
            type="http", scheme="bearer", description="A token from POST /api/v1/auth/token/"
        ),
        "basic": SecurityScheme(type="http", scheme="basic", description="username:password"),
    }
    return OpenAPIConfig(
        title="chatserver",
        version="1.0.0",
        description="A direct-message chat server. Errors are RFC 9457 problem+json.",
        path="/docs",
        render_plugins=[SwaggerRenderPlugin(path="/")],
        components=Components(security_schemes=schemes),
        security=[{"bearer": []}, {"basic": []}],
        use_handler_docstrings=True,
    )
