"""Prometheus metrics (``prometheus-client``), served on ``CHAT_METRICS_ADDR`` only.

The metrics are the library's, defined once here; code that counts something imports
the object it needs. With one worker the worker serves them itself (a thread of the
library's own WSGI server). With several, ``chatserver serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start (the library then keeps values in
files there), and one exporter process (``metrics_exporter.py``) serves the sum of every
worker. The public port never serves them.

Per request, the observer costs one dict look-up and one histogram observation: the
labelled child is cached by (route template, method, status), and the route label is the
template Litestar matched (``/api/v1/conversations/{user_id}``), never the raw path,
so ids and 404 probes cannot grow the label set (unmatched paths share one label).

For rate limits: increment ``RATE_LIMITED.labels(limit=NAME)`` for every refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("chatserver")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_SECONDS = 1.0
UNMATCHED = "unmatched"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

REQUESTS = Histogram(
    "chatserver_request_duration_seconds",
    "HTTP requests by route template, method and status, with their duration (a stream's "
    "whole life for Server-Sent Events and long-polls)",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
MESSAGES_SENT = Counter("chatserver_messages_sent_total", "Messages stored (201)")
EVENTS_DELIVERED = Counter(
    "chatserver_events_delivered_total", "Events sent to clients", ["transport"]
)
EVENTS_DROPPED = Counter(
    "chatserver_events_dropped_total",
    "Live events not delivered: a stream's queue overflowed (it closes with 1013 and "
    "resumes), or publishing to the broker failed (streams re-read the database)",
    ["reason"],
)
OPEN_STREAMS = Gauge(
    "chatserver_open_streams",
    "Open streams: websocket, sse, longpoll (a long-poll while it waits)",
    ["kind"],
    multiprocess_mode="livesum",
)
COMMIT_BATCH = Histogram(
    "chatserver_sqlite_commit_batch_size",
    "Write transactions made durable by one SQLite group COMMIT",
    buckets=BATCH_BUCKETS,
)
COMMIT_SECONDS = Histogram(
    "chatserver_sqlite_commit_seconds",
    "Duration of one SQLite group COMMIT (with its fsync)",
    buckets=LATENCY_BUCKETS,
)
PG_POOL = Gauge(
    "chatserver_postgres_pool_connections",
    "PostgreSQL pool connections by state (in_use, idle)",
    ["state"],
    multiprocess_mode="livesum",
)
PG_POOL_WAIT = Histogram(
    "chatserver_postgres_pool_wait_seconds",
    "Time to get a connection from the PostgreSQL pool",
    buckets=LATENCY_BUCKETS,
)
REDIS_UP = Gauge(
    "chatserver_redis_up",
    "1 while the Redis broker is connected, 0 while it is down (absent without Redis)",
    multiprocess_mode="livemin",
)
ARGON2_QUEUE = Gauge(
    "chatserver_argon2_queue_depth",
    "Password hashes and checks running or waiting for a thread",
    multiprocess_mode="livesum",
)
RATE_LIMITED = Counter(
    "chatserver_rate_limited_total", "Requests refused by a rate limit", ["limit"]
)

DELIVERED_WS = EVENTS_DELIVERED.labels("websocket")
DELIVERED_SSE = EVENTS_DELIVERED.labels("sse")
DELIVERED_POLL = EVENTS_DELIVERED.labels("longpoll")
DROPPED_OVERFLOW = EVENTS_DROPPED.labels("overflow")
DROPPED_BROKER = EVENTS_DROPPED.labels("broker")


def multiprocess() -> bool:
    return MULTIPROCESS_ENV in os.environ


class RequestMetrics:
    """The request observer (see middleware.py): route, method, status and duration."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], Any] = {}

    def __call__(self, scope: Any, status: int, seconds: float) -> None:
        key = (scope.get("path_template") or UNMATCHED, scope["method"], status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = REQUESTS.labels(key[0], key[1], str(status))
        child.observe(seconds)


@contextlib.asynccontextmanager
async def serving(host: str, port: int, gauges: Callable[[], None]) -> AsyncIterator[None]:
    """For the app's lifespan: serve the metrics (one worker; with several the exporter
    does) and refresh the sampled gauges (``gauges``) every second."""
    server = None
    if not multiprocess():
        server, _ = start_http_server(port, host)
        log.info("metrics on http://%s:%d/metrics", host, port)
    task = asyncio.create_task(_refresh(gauges))
    try:
        yield
    finally:
        task.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        if multiprocess():
            from prometheus_client import multiprocess as mp

            mp.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


async def _refresh(gauges: Callable[[], None]) -> None:
    while True:
        try:
            gauges()
        except Exception:  # a failed sample must not stop the next one
            log.exception("sampling metrics failed")
        await asyncio.sleep(REFRESH_SECONDS)
