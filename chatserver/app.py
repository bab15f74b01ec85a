"""``create_app(settings)``: routes, plugins, error handlers and the lifespan. No globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.channels.backends.memory import MemoryChannelsBackend
from redis.asyncio import BlockingConnectionPool, Redis

from chatserver import actions
from chatserver.api import blocks, chats, conversations, events, health, stream, tokens, users, web
from chatserver.api.openapi import openapi_config
from chatserver.auth import TokenCache
from chatserver.broker import BoundedSubscriber, ChatChannels, ChatRedisBackend
from chatserver.config import Settings
from chatserver.db import open_database
from chatserver.events import Events
from chatserver.hub import Hub
from chatserver.lastseen import LastSeen
from chatserver.middleware import RequestContext
from chatserver.presence import LocalPresence, RedisPresence
from chatserver.problems import EXCEPTION_HANDLERS
from chatserver.searchindex import SearchPurge
from chatserver.services import Services
from chatserver.typing_relay import TypingWindow
from chatserver.views import MessageCache

log = logging.getLogger("chatserver")

PURGE_INTERVAL_SECONDS = 3600
REDIS_CONNECTIONS = 64


def create_app(settings: Settings) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.services = await _start_services(settings, stack)
            yield

    handlers: list[Any] = [
        users.router,
        tokens.router,
        chats.router,
        conversations.router,
        blocks.router,
        *stream.HANDLERS,
        *events.HANDLERS,
        *health.HANDLERS,
        web.web_router(),
    ]
    return ChatApp(
        route_handlers=handlers,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
        logging_config=None,
    )


class ChatApp(Litestar):
    """Litestar, entered through ``RequestContext`` (request ids and start times)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entry = RequestContext(super().__call__)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._entry(scope, receive, send)


async def _start_services(settings: Settings, stack: contextlib.AsyncExitStack) -> Services:
    """Open the database, the broker and the hub; the stack closes them in reverse."""
    db = await open_database(settings.database_url)
    stack.push_async_callback(db.close)
    redis = _redis_client(settings.redis_url) if settings.redis_url else None
    if redis is not None:
        stack.push_async_callback(redis.aclose)
    channels = ChatChannels(
        backend=ChatRedisBackend(redis=redis) if redis else MemoryChannelsBackend(),
        arbitrary_channels_allowed=True,
        subscriber_class=BoundedSubscriber,
        subscriber_max_backlog=settings.stream_queue_size,
    )
    await stack.enter_async_context(channels)
    token_cache = TokenCache(settings.token_cache_seconds)
    presence = RedisPresence(redis) if redis else LocalPresence()
    last_seen = LastSeen(db, settings.last_seen_resolution_seconds)
    last_seen.start()
    stack.push_async_callback(last_seen.stop)
    messages = MessageCache()
    channels.after_resync = [messages.clear]
    hub = Hub(
        channels,
        presence,
        token_cache,
        last_seen,
        db,
        settings.presence_grace_seconds,
        messages,
    )
    await hub.start()
    stack.push_async_callback(hub.stop)
    events = Events(channels, channels.may_have_listeners)
    search_purge = SearchPurge(db, settings.search_purge_seconds)
    search_purge.start()
    stack.push_async_callback(search_purge.stop)
    typing = TypingWindow(redis)
    services = Services(
        settings, db, events, token_cache, hub, last_seen, typing, messages, search_purge
    )
    purge = asyncio.create_task(_purge_expired(services))
    stack.callback(purge.cancel)
    return services


def _redis_client(url: str) -> Redis:
    # A blocking pool: a burst of streams opening at once waits for a free connection
    # instead of failing with "Too many connections".
    pool = BlockingConnectionPool.from_url(url, max_connections=REDIS_CONNECTIONS, timeout=10)
    return Redis(connection_pool=pool)


async def _purge_expired(services: Services) -> None:
    """Forget Idempotency-Keys and events older than they are kept, once an hour."""
    while True:
        try:
            keys = await actions.forget_expired_idempotency_keys(services)
            events = await actions.forget_expired_events(services)
            if keys or events:
                log.info("forgot %d expired idempotency keys, %d events", keys, events)
        except Exception:  # a failed purge must not stop the server; try again later
            log.exception("purging expired rows failed")
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
