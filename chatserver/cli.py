"""``chatserver serve|migrate|bulk-load``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from chatserver.config import (
    ENV_NAMES,
    SERVERS,
    ConfigError,
    Settings,
    redact,
    settings_from_env,
)
from chatserver.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatserver", description="A direct-message chat server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations, then serve HTTP")
    serve.add_argument("--host", help="address to bind (CHAT_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (CHAT_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (CHAT_WORKERS, default 1)")
    serve.add_argument("--server", choices=SERVERS, help="HTTP server (CHAT_SERVER, granian)")
    _common(serve)
    _common(commands.add_parser("migrate", help="apply pending migrations and exit"))
    bulk = commands.add_parser("bulk-load", help="insert many messages fast (benchmarks)")
    bulk.add_argument("--sender", type=int, required=True, help="sending user id")
    bulk.add_argument("--recipient", type=int, required=True, help="receiving user id")
    bulk.add_argument("--count", type=int, required=True, help="how many messages")
    _common(bulk)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="CHAT_DATABASE_URL (default sqlite:///chat.db)")
    parser.add_argument("--redis-url", help="CHAT_REDIS_URL (needed for --workers > 1)")
    parser.add_argument("--log-level", help="CHAT_LOG_LEVEL (default info)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        configure_logging(settings.log_level)
        if args.command == "bulk-load":
            return _bulk_load(settings, args.sender, args.recipient, args.count)
        _migrate(settings)
        if args.command == "serve":
            _serve(settings)
    except ConfigError as exc:
        print(f"chatserver: {exc}", file=sys.stderr)
        return 2
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in ENV_NAMES}
    settings = settings_from_env().with_overrides(**flags)
    if settings.workers > 1 and settings.redis_url is None:
        raise ConfigError(
            f"--workers {settings.workers} needs CHAT_REDIS_URL: without Redis, a message "
            "published in one worker never reaches sockets held by the others"
        )
    return settings


def _migrate(settings: Settings) -> None:
    from chatserver.migrations import upgrade

    try:
        upgrade(settings.database_url)
    except Exception as exc:  # unreachable server, bad credentials, unwritable file …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot migrate the database at {redact(settings.database_url)}: {reason}"
        ) from exc


def _serve(settings: Settings) -> None:
    # Workers are separate processes: they read the final settings from the environment.
    for name, var in ENV_NAMES.items():
        value = getattr(settings, name)
        if value is not None:
            os.environ[var] = str(value)
    if settings.server == "uvicorn":
        _serve_uvicorn(settings)
    else:
        _serve_granian(settings)


def _serve_uvicorn(settings: Settings) -> None:
    import uvicorn

    from chatserver.api.stream import MAX_FRAME_BYTES

    uvicorn.run(
        "chatserver.asgi:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_max_size=MAX_FRAME_BYTES,
        backlog=2048,
    )


def _serve_granian(settings: Settings) -> None:
    from granian import Granian

    Granian(
        "chatserver.asgi:app_from_env",
        address=settings.host,
        port=settings.port,
        interface="asgi",  # type: ignore[arg-type]
        workers=settings.workers,
        factory=True,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
        websockets=True,
        backlog=2048,
    ).serve()


def _bulk_load(settings: Settings, sender: int, recipient: int, count: int) -> int:
    from chatserver.bulk import bulk_load

    asyncio.run(bulk_load(settings, sender, recipient, count))
    return 0
