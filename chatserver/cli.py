"""``chatserver serve|migrate|bulk-load|users|tokens|invites|stats|backup|restore``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from chatserver.admin.backup import BACKUP_COMMANDS, add_backup_commands, run_backup
from chatserver.admin.commands import ADMIN_COMMANDS, add_commands
from chatserver.admin.commands import run as run_admin
from chatserver.config import (
    ENV_NAMES,
    FIELD_TYPES,
    MAX_FRAME_BYTES,
    ConfigError,
    Settings,
    database_scheme,
    help_text,
    metrics_address,
    parse_float,
    parse_int,
    redact,
    settings_from_env,
    sqlite_path,
)
from chatserver.logs import configure_logging

# The flags of the commands other than serve (serve has one for every setting).
COMMON = ("database_url", "redis_url", "log_level")
REDIS_TIMEOUT_SECONDS = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatserver", description="A direct-message chat server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="apply pending migrations, then serve HTTP",
        description="Apply pending migrations, then serve HTTP (uvicorn unless --server "
        "granian). Every setting is a CHAT_* variable; its flag overrides it.",
    )
    add_setting_flags(serve, ENV_NAMES)
    add_setting_flags(commands.add_parser("migrate", help="apply pending migrations and exit"))
    bulk = commands.add_parser("bulk-load", help="insert many messages fast (benchmarks)")
    bulk.add_argument("--sender", type=int, required=True, help="sending user id")
    bulk.add_argument("--recipient", type=int, required=True, help="receiving user id")
    bulk.add_argument("--count", type=int, required=True, help="how many messages")
    bulk.add_argument(
        "--last-sender",
        type=int,
        help="every user from --sender to this id sends --count messages (many conversations)",
    )
    add_setting_flags(bulk)
    add_commands(commands, add_setting_flags)
    add_backup_commands(commands, add_setting_flags)
    return parser


def add_setting_flags(parser: argparse.ArgumentParser, names: Iterable[str] = COMMON) -> None:
    """A flag per setting, its help naming the variable and the true default. Values stay
    strings here: `_settings` converts them, so a bad one is one line like a bad variable."""
    defaults = Settings()
    for name in names:
        parser.add_argument(
            flag_name(name),
            dest=name,
            metavar=metavar(name),
            help=f"{help_text(name)} ({ENV_NAMES[name]}, default: {shown(defaults, name)})",
        )


def metavar(name: str) -> str:
    for suffix, word in (("_url", "URL"), ("_bytes", "BYTES"), ("_size", "N")):
        if name.endswith(suffix):
            return word
    if FIELD_TYPES[name] is float or name.endswith("_seconds"):
        return "SECONDS"
    return "N" if FIELD_TYPES[name] is int else name.upper()


def shown(defaults: Settings, name: str) -> str:
    """A default as --help shows it (20, not 20.0)."""
    default = getattr(defaults, name)
    if default is None:
        return "unset"
    return f"{default:g}" if isinstance(default, float) else str(default)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        configure_logging(settings.log_level, settings.log_format)
        check_sqlite_folder(settings)
        if args.command == "bulk-load":
            senders = range(args.sender, (args.last_sender or args.sender) + 1)
            return _bulk_load(settings, senders, args.recipient, args.count)
        if args.command in BACKUP_COMMANDS:
            return run_backup(settings, args)
        if args.command == "serve":
            check_redis(settings)
        if args.command in ADMIN_COMMANDS:  # their output is the result, not the migration
            logging.getLogger("alembic").setLevel(logging.WARNING)
        _migrate(settings)
        if args.command in ADMIN_COMMANDS:
            return run_admin(settings, args)
        if args.command == "serve":
            _serve(settings)
    except ConfigError as exc:
        print(f"chatserver: {exc}", file=sys.stderr)
        return 2
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: _flag_value(name, getattr(args, name, None)) for name in ENV_NAMES}
    settings = settings_from_env().with_overrides(**flags)
    if settings.workers > 1 and settings.redis_url is None:
        raise ConfigError(
            f"--workers {settings.workers} needs CHAT_REDIS_URL: without Redis, a message "
            "published in one worker never reaches sockets held by the others"
        )
    return settings


def _flag_value(name: str, raw: str | None) -> object:
    if raw is None:
        return None
    if FIELD_TYPES[name] is int:
        return parse_int(flag_name(name), raw)
    if FIELD_TYPES[name] is float:
        return parse_float(flag_name(name), raw)
    return raw


def check_sqlite_folder(settings: Settings) -> None:
    """SQLite creates the file but not its folder: say which folder is missing."""
    if database_scheme(settings.database_url) != "sqlite":
        return
    path = sqlite_path(settings.database_url)
    folder = Path(path).parent
    if path != ":memory:" and not folder.is_dir():
        raise ConfigError(
            f"CHAT_DATABASE_URL points into {folder}, a folder that does not exist "
            f"({settings.database_url})"
        )


def check_redis(settings: Settings) -> None:
    """Ping Redis before serving: the workers would each fail on it with a traceback."""
    if settings.redis_url is None:
        return
    import redis

    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ConfigError(
            f"cannot reach Redis at {redact(settings.redis_url)} (CHAT_REDIS_URL): "
            f"{first_line(exc)}"
        ) from exc
    finally:
        client.close()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _migrate(settings: Settings) -> None:
    from chatserver.migrations import upgrade_if_behind

    try:
        upgrade_if_behind(settings.database_url)
    except Exception as exc:  # unreachable server, bad credentials, unwritable file …
        raise ConfigError(
            f"cannot migrate the database at {redact(settings.database_url)}: {first_line(exc)}"
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
    if settings.metrics_addr is not None and settings.workers > 1:
        _start_metrics_exporter(settings.metrics_addr)
    argv = server_command(settings)
    from chatserver.connections import raise_descriptor_limit

    # Workers inherit the limit: connection caps are set below it (connections.py).
    raise_descriptor_limit()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 (our own argv, no shell)


def _start_metrics_exporter(address: str) -> None:
    """Several workers: each keeps its metrics in files of a fresh folder, and one exporter
    process (a child of this one, which it outlives only briefly: it ends when the server
    process is gone) serves their sum on the metrics address (see metrics.py)."""
    import subprocess
    import tempfile

    from chatserver.metrics import MULTIPROCESS_ENV
    from chatserver.metrics_exporter import command

    directory = tempfile.mkdtemp(prefix="chatserver-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory
    host, port = metrics_address(address)
    subprocess.Popen(command(directory, host, port))  # noqa: S603 (our own argv)


APP_FACTORY = "chatserver.asgi:app_from_env"
GUARDED_PROTOCOL = "chatserver.connections:GuardedHttpToolsProtocol"
# How long a stopping server waits for open streams before closing them.
GRACEFUL_SHUTDOWN_SECONDS = 5


def server_command(settings: Settings) -> list[str]:
    """The command line that serves the app with the configured ASGI server."""
    common = [sys.executable, "-m", settings.server, "--host", settings.host]
    common += ["--port", str(settings.port), "--workers", str(settings.workers)]
    common += ["--log-level", settings.log_level.lower(), "--backlog", "2048"]
    if settings.server == "granian":
        return [*common, *granian_limits(settings), "--ws", "--factory", APP_FACTORY]
    return [
        *common,
        # Query strings carry what must not be logged; errors are logged by the app.
        "--no-access-log",
        # No "server: uvicorn" on every response: it tells a prober what to aim at.
        "--no-server-header",
        "--http",
        GUARDED_PROTOCOL,
        "--timeout-keep-alive",
        str(settings.keepalive_timeout_seconds),
        "--ws-ping-interval",
        str(settings.ws_ping_interval),
        "--ws-ping-timeout",
        str(settings.ws_ping_timeout),
        "--ws-max-size",
        str(MAX_FRAME_BYTES),
        # permessage-deflate keeps zlib state for every socket; chat frames are small
        "--ws-per-message-deflate",
        "false",
        "--timeout-graceful-shutdown",
        str(GRACEFUL_SHUTDOWN_SECONDS),
        "--factory",
        APP_FACTORY,
    ]


def granian_limits(settings: Settings) -> list[str]:
    """What granian offers of the connection limits: the head timeout and the HTTP/1
    buffer (which bounds the head). It has no per-address or total connection cap and no
    idle keep-alive timeout (docs/security.md)."""
    return [
        "--interface",
        "asgi",
        "--no-access-log",
        "--http1-header-read-timeout",
        str(int(settings.header_timeout_seconds * 1000)),
        "--http1-buffer-size",
        str(max(8192, settings.max_header_bytes + settings.max_body_bytes)),
    ]


def _bulk_load(settings: Settings, senders: range, recipient: int, count: int) -> int:
    from chatserver.bulk import bulk_load, bulk_load_senders

    if len(senders) == 1:
        asyncio.run(bulk_load(settings, senders[0], recipient, count))
    else:
        asyncio.run(bulk_load_senders(settings, senders, recipient, count))
    return 0
