"""``chatserver serve|migrate|bulk-load``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from chatserver.config import (
    ENV_NAMES,
    MAX_FRAME_BYTES,
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
    from chatserver.migrations import upgrade_if_behind

    try:
        upgrade_if_behind(settings.database_url)
    except Exception as exc:  # unreachable server, bad credentials, unwritable file …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot migrate the database at {redact(settings.database_url)}: {reason}"
        ) from exc


def _serve(settings: Settings) -> None:
    """Replace this process with the HTTP server: the migration tooling loaded above
    (SQLAlchemy, Alembic) does not stay resident, and the command line shows the real
    server and its flags."""
    # Workers are separate processes: they read the final settings from the environment.
    for name, var in ENV_NAMES.items():
        value = getattr(settings, name)
        if value is not None:
            os.environ[var] = str(value)
    argv = server_command(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 (our own argv, no shell)


APP_FACTORY = "chatserver.asgi:app_from_env"
# How long a stopping server waits for open streams before closing them.
GRACEFUL_SHUTDOWN_SECONDS = 5


def server_command(settings: Settings) -> list[str]:
    """The command line that serves the app with the configured ASGI server."""
    common = [sys.executable, "-m", settings.server, "--host", settings.host]
    common += ["--port", str(settings.port), "--workers", str(settings.workers)]
    common += ["--log-level", settings.log_level.lower(), "--backlog", "2048"]
    if settings.server == "granian":
        return [*common, "--interface", "asgi", "--ws", "--factory", APP_FACTORY]
    return [
        *common,
        "--no-access-log",
        "--ws-ping-interval",
        str(settings.ws_ping_interval),
        "--ws-ping-timeout",
        str(settings.ws_ping_timeout),
        "--ws-max-size",
        str(MAX_FRAME_BYTES),
        # permessage-deflate holds ~40 KiB of zlib state per socket; chat frames are small
        "--ws-per-message-deflate",
        "false",
        "--timeout-graceful-shutdown",
        str(GRACEFUL_SHUTDOWN_SECONDS),
        "--factory",
        APP_FACTORY,
    ]


def _bulk_load(settings: Settings, sender: int, recipient: int, count: int) -> int:
    from chatserver.bulk import bulk_load

    asyncio.run(bulk_load(settings, sender, recipient, count))
    return 0
