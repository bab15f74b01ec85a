"""The ASGI entry point the server's workers import: settings come from the environment."""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.types import ASGIApp

from chatserver.app import create_app
from chatserver.config import ConfigError, settings_from_env
from chatserver.logs import configure_logging

log = logging.getLogger("chatserver")
# Any ASGI callable; the lifespan's messages are not among Litestar's typed ones.
ASGI = Callable[[Any, Any, Any], Awaitable[None]]


def app_from_env() -> ASGIApp:
    """Factory for the ASGI server (``--factory``): every worker builds its app from CHAT_*
    variables. A bad one ends the worker with one line, as it ends ``chatserver serve``."""
    try:
        settings = settings_from_env()
    except ConfigError as exc:
        raise SystemExit(f"chatserver: {exc}") from None
    configure_logging(settings.log_level, settings.log_format)
    app = OneLineStartupFailure(create_app(settings))
    tune_garbage_collector()
    return app


class OneLineStartupFailure:
    """Reports a failed start-up (the lifespan: database, Redis, …) as one line.

    Litestar hands the server the whole traceback as the failure message, which the server
    prints; an operator needs the reason. The traceback is still logged at debug level.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held = False

        async def hold_startup_failure(message: dict[str, Any]) -> None:
            nonlocal held
            if message["type"] == "lifespan.startup.failed":
                held = True  # sent below, once the exception says why
                return
            await send(message)

        try:
            await self.app(scope, receive, hold_startup_failure)
        except BaseException as exc:
            if not held:
                raise
            # Logged here rather than sent as the failure's message: granian does not print it.
            log.error("%s", startup_failure(exc))
            log.debug("start-up failed", exc_info=exc)
            await send({"type": "lifespan.startup.failed", "message": ""})


def startup_failure(exc: BaseException) -> str:
    """``cannot start: <exception type>: <its first line>``, for the innermost
    error (a task group's failure wraps the real one)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else "(no message)"
    return f"cannot start: {name}: {reason}"


# The default first threshold runs young collections far more often than there is cyclic
# garbage to find while many requests are in flight, and every full collection walks the
# objects the app keeps for its whole life; both showed up in the tail latency (figures in
# the commit that set these). Freezing moves the start-up objects out of every future
# collection; the higher threshold lets collections run when there is real cyclic garbage.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_garbage_collector() -> None:
    """For the server process only (tests build many apps in one process)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
