"""Settings read from ``CHAT_*`` environment variables (and overridden by CLI flags).

There is no module-level instance: the CLI builds one and hands it to ``create_app``,
and every test builds its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

# WebSocket frames above this close the socket with 1009.
MAX_FRAME_BYTES = 64 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """A setting is invalid; the message is one line meant for the operator."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server can be configured with."""

    database_url: str = "sqlite:///chat.db"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    # uvicorn (with uvloop and httptools) is the default: it sends WebSocket protocol pings
    # and holds ~23 KiB per idle socket; granian cannot ping yet and holds ~150 KiB per
    # socket waiting in receive(). Measured, both serve our routes at the same rate.
    server: str = "uvicorn"
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    # Bodies larger than this are refused with 413 before they are read whole.
    max_body_bytes: int = 64 * 1024
    # How long an Idempotency-Key is remembered (the contract says at least 24 h).
    idempotency_ttl_seconds: int = 48 * 3600
    # last_seen_at is written at most this often per user, so reads stay (mostly) read-only.
    last_seen_resolution_seconds: float = 1.0
    # Bearer token look-ups are cached this long; revocation also evicts at once.
    token_cache_seconds: float = 30.0
    # Events a stream may have waiting to be sent; a client that falls further behind is
    # disconnected (close code 1013) and resumes with after_id.
    stream_queue_size: int = 1000

    def __post_init__(self) -> None:
        validate(self)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given non-None values replaced (used for CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


ENV_NAMES = {
    "database_url": "CHAT_DATABASE_URL",
    "redis_url": "CHAT_REDIS_URL",
    "host": "CHAT_HOST",
    "port": "CHAT_PORT",
    "workers": "CHAT_WORKERS",
    "log_level": "CHAT_LOG_LEVEL",
    "server": "CHAT_SERVER",
    "ws_ping_interval": "CHAT_WS_PING_INTERVAL",
    "ws_ping_timeout": "CHAT_WS_PING_TIMEOUT",
}
SERVERS = ("granian", "uvicorn")


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``CHAT_*`` variables; raise ConfigError with one clear line."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    types = {f.name: f.type for f in fields(Settings)}
    for name, var in ENV_NAMES.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        if types[name] == "int":
            values[name] = parse_int(var, raw)
        elif types[name] == "float":
            values[name] = parse_float(var, raw)
        else:
            values[name] = raw
    return Settings(**values)


def parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def database_scheme(url: str) -> str:
    """'sqlite' or 'postgresql' for any accepted form (driver suffixes included)."""
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    return "postgresql" if scheme in ("postgres", "postgresql") else scheme


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``sqlite:////abs`` for absolute paths)."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return path or ":memory:"


def validate(settings: Settings) -> None:
    scheme = database_scheme(settings.database_url)
    if scheme not in ("sqlite", "postgresql"):
        raise ConfigError(
            "CHAT_DATABASE_URL must start with sqlite:/// or postgresql://, "
            f"got {redact(settings.database_url)!r}"
        )
    if scheme == "sqlite" and ":///" not in settings.database_url:
        raise ConfigError("CHAT_DATABASE_URL for SQLite must look like sqlite:///path/to/chat.db")
    if settings.redis_url is not None and urlsplit(settings.redis_url).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        raise ConfigError("CHAT_REDIS_URL must start with redis://, rediss:// or unix://")
    if not 0 < settings.port < 65536:
        raise ConfigError(f"CHAT_PORT must be between 1 and 65535, got {settings.port}")
    if settings.workers < 1:
        raise ConfigError(f"CHAT_WORKERS must be at least 1, got {settings.workers}")
    if settings.server not in SERVERS:
        raise ConfigError(f"CHAT_SERVER must be one of {', '.join(SERVERS)}")
    if not settings.ws_ping_interval > 0 or not settings.ws_ping_timeout > 0:
        raise ConfigError("CHAT_WS_PING_INTERVAL and CHAT_WS_PING_TIMEOUT must be positive")
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"CHAT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")


def redact(url: str) -> str:
    """The URL with its password replaced, so it can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
