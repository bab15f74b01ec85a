"""``create_app(settings)``: routes, plugins, error handlers and the lifespan. No globals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from litestar import Litestar
from litestar.channels.backends.memory import MemoryChannelsBackend
from redis.asyncio import BlockingConnectionPool, Redis

from chatserver import actions, metrics
from chatserver.admin import actions as admin_actions
from chatserver.api import chats, conversations, events, health, stream, tokens, users
from chatserver.api.openapi import openapi_config
from chatserver.auth import TokenCache
from chatserver.broker import BoundedSubscriber, ChatChannels, ChatRedisBackend
from chatserver.config import Settings, metrics_address
from chatserver.db import open_database
from chatserver.events import Events
from chatserver.hub import Hub
from chatserver.lastseen import LastSeen
from chatserver.logs import access_log
from chatserver.metrics import RequestMetrics
from chatserver.middleware import Observer, RequestContext
from chatserver.presence import LocalPresence, RedisPresence
from chatserver.problems import EXCEPTION_HANDLERS
from chatserver.revocations import RevocationFollower
from chatserver.services import Services

log = logging.getLogger("chatserver")

PURGE_INTERVAL_SECONDS = 3600
# Far longer than any node takes to poll them (revocations.py), so none is missed.
REVOCATIONS_KEPT_SECONDS = 86_400
REDIS_CONNECTIONS = 64


def create_app(settings: Settings) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.services = services = await _start_services(settings, stack)
            if settings.metrics_addr is not None:
                host, port = metrics_address(settings.metrics_addr)
                gauges = functools.partial(_sample_gauges, services)
                await stack.enter_async_context(metrics.serving(host, port, gauges))
            yield

    handlers: list[Any] = [
        users.router,
        tokens.router,
        chats.router,
        conversations.router,
        *stream.HANDLERS,
        *events.HANDLERS,
        *health.HANDLERS,
    ]
    return ChatApp(
        route_handlers=handlers,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
        logging_config=None,
        observers=_observers(settings),
    )


def _observers(settings: Settings) -> list[Observer]:
    """Who hears of each finished request: metrics and the JSON access log, when on."""
    observers: list[Observer] = []
    if settings.metrics_addr is not None:
        observers.append(RequestMetrics())
    if settings.log_format == "json":
        observers.append(access_log)
    return observers


class ChatApp(Litestar):
    """Litestar, entered through ``RequestContext`` (request ids and start times)."""

    def __init__(self, *args: Any, observers: Sequence[Observer] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entry = RequestContext(super().__call__, observers)

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
    hub = Hub(channels, presence, token_cache, last_seen)
    await hub.start()
    stack.push_async_callback(hub.stop)
    follower = RevocationFollower(db, hub)
    await follower.start()
    stack.push_async_callback(follower.stop)
    events = Events(channels, channels.may_have_listeners)
    services = Services(settings, db, events, token_cache, hub, last_seen)
    purge = asyncio.create_task(_purge_expired(services))
    stack.callback(purge.cancel)
    return services


def _sample_gauges(services: Services) -> None:
    """The gauges read from their source once a second (not counted on the hot path)."""
    pool_sizes = getattr(services.db, "pool_sizes", None)  # PostgreSQL only
    if pool_sizes is not None:
        size, idle = pool_sizes()
        metrics.PG_POOL.labels("in_use").set(size - idle)
        metrics.PG_POOL.labels("idle").set(idle)
    channels = services.events.channels
    if services.settings.redis_url is not None and isinstance(channels, ChatChannels):
        metrics.REDIS_UP.set(1 if channels.broker_up else 0)


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
            await admin_actions.forget_old_revocations(services.db, REVOCATIONS_KEPT_SECONDS)
            if keys or events:
                log.info("forgot %d expired idempotency keys, %d events", keys, events)
        except Exception:  # a failed purge must not stop the server; try again later
            log.exception("purging expired rows failed")
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
