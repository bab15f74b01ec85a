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
from litestar.config.cors import CORSConfig
from litestar.routes import HTTPRoute
from redis.asyncio import BlockingConnectionPool, Redis

from chatserver import actions, metrics
from chatserver.admin import actions as admin_actions
from chatserver.api import blocks, chats, conversations, events, health, stream, tokens, users, web
from chatserver.api.openapi import openapi_config
from chatserver.auth import Logins, TokenCache
from chatserver.broker import BoundedSubscriber, ChatChannels, ChatRedisBackend
from chatserver.config import Settings, metrics_address
from chatserver.db import open_database
from chatserver.events import Events
from chatserver.hub import Hub
from chatserver.lastseen import LastSeen
from chatserver.logs import access_log
from chatserver.metrics import RequestMetrics
from chatserver.middleware import Observer, RequestContext
from chatserver.passwords import HashGate
from chatserver.presence import LocalPresence, RedisPresence
from chatserver.problems import EXCEPTION_HANDLERS
from chatserver.ratelimit import RateLimiter
from chatserver.revocations import RevocationFollower
from chatserver.searchindex import SearchPurge
from chatserver.services import Services
from chatserver.throttle import Limits, LoginThrottle
from chatserver.tokenuse import TokenUse
from chatserver.typing_relay import TypingWindow
from chatserver.views import MessageCache

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
        tokens.tokens_router,
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
        cors_config=_cors(settings),
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
        # Public for the benchmark, which switches its observers off and on between rounds.
        self.request_context = RequestContext(super().__call__, observers)
        _fix_options_allow(self.routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.request_context(scope, receive, send)


def _cors(settings: Settings) -> CORSConfig | None:
    """CORS only for the origins the operator lists: a browser elsewhere cannot call the API."""
    origins = settings.cors_origin_list
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        expose_headers=["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"],
    )


def _fix_options_allow(routes: list[Any]) -> None:
    """Make each path's automatic OPTIONS answer list all of its methods.

    Litestar builds the OPTIONS handler with the first route made for a path and replaces
    that route as more handlers join the path, so ``Allow`` named only the first handler's
    methods; the handler reads ``methods`` from the route it closes over, so point it at the
    final one's."""
    for route in routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler = route.route_handler_map["OPTIONS"][0]
        for cell in getattr(handler.fn, "__closure__", None) or ():
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents.methods = route.methods


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
        max_streams=settings.max_streams_per_user,
    )
    await hub.start()
    stack.push_async_callback(hub.stop)
    follower = RevocationFollower(db, hub)
    await follower.start()
    stack.push_async_callback(follower.stop)
    events = Events(channels, channels.may_have_listeners)
    search_purge = SearchPurge(db, settings.search_purge_seconds)
    search_purge.start()
    stack.push_async_callback(search_purge.stop)
    token_use = TokenUse(db, settings.token_use_resolution_seconds)
    token_use.start()
    stack.push_async_callback(token_use.stop)
    logins = Logins(
        LoginThrottle(_login_limits(settings), redis), HashGate(settings.hash_concurrency)
    )
    services = Services(
        settings,
        db,
        events,
        token_cache,
        hub,
        last_seen,
        TypingWindow(redis),
        RateLimiter(settings, redis),
        logins,
        token_use,
        messages,
        search_purge,
    )
    purge = asyncio.create_task(_purge_expired(services))
    stack.callback(purge.cancel)
    return services


def _login_limits(settings: Settings) -> Limits:
    return Limits(
        threshold=settings.login_failures_before_throttle,
        per_hour=settings.login_failures_per_hour,
        backoff_max_ms=int(settings.login_backoff_max_seconds * 1000),
    )


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
    """Forget Idempotency-Keys, events and tokens older than they are kept, once an hour."""
    while True:
        try:
            keys = await actions.forget_expired_idempotency_keys(services)
            events = await actions.forget_expired_events(services)
            tokens = await actions.forget_expired_tokens(services)
            await admin_actions.forget_old_revocations(services.db, REVOCATIONS_KEPT_SECONDS)
            if keys or events or tokens:
                log.info(
                    "forgot %d expired idempotency keys, %d events, %d tokens", keys, events, tokens
                )
        except Exception:  # a failed purge must not stop the server; try again later
            log.exception("purging expired rows failed")
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
