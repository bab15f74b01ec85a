"""Settings read from ``CHAT_*`` environment variables (and overridden by CLI flags).

Every field of `Settings` is one variable, ``CHAT_`` + its name in capitals, and one
``chatserver serve`` flag, ``--`` + its name with dashes; the help text lives with the field.
There is no module-level instance: the CLI builds one and hands it to ``create_app``, and
every test builds its own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, get_type_hints
from urllib.parse import urlsplit

# WebSocket frames above this close the socket with 1009.
MAX_FRAME_BYTES = 64 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SERVERS = ("uvicorn", "granian")
REGISTRATION_MODES = ("open", "invite", "closed")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A setting is invalid; the message is one line meant for the operator."""


def setting(default: Any, doc: str) -> Any:
    """A Settings field with the help text its flag shows."""
    return field(default=default, metadata={"help": doc})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server can be configured with."""

    database_url: str = setting(
        "sqlite:///chat.db", "sqlite:///path/to/chat.db or postgresql://user:password@host/db"
    )
    redis_url: str | None = setting(
        None, "redis://host:port/db: fan-out across workers and machines (needed for workers > 1)"
    )
    host: str = setting("127.0.0.1", "address to bind")
    port: int = setting(8000, "port to bind")
    workers: int = setting(1, "worker processes")
    log_level: str = setting("info", f"one of {', '.join(LOG_LEVELS)}")
    # uvicorn (with uvloop and httptools) is the default: it sends WebSocket protocol pings,
    # and it holds far less memory per idle socket than granian, which cannot ping yet
    # (docs/architecture.md has the figures).
    server: str = setting("uvicorn", "HTTP server: uvicorn (WebSocket pings) or granian")
    ws_ping_interval: float = setting(20.0, "seconds between WebSocket pings (uvicorn)")
    ws_ping_timeout: float = setting(20.0, "seconds to wait for a pong before closing (uvicorn)")
    max_body_bytes: int = setting(
        64 * 1024, "larger request bodies are refused with 413 before they are read whole"
    )
    idempotency_ttl_seconds: int = setting(
        48 * 3600, "how long an Idempotency-Key is remembered (the contract says at least 24 h)"
    )
    last_seen_resolution_seconds: float = setting(
        1.0, "last_seen_at is written at most this often per user, so reads stay read-only"
    )
    token_cache_seconds: float = setting(
        30.0, "how long a bearer token look-up is cached (revoking evicts it at once)"
    )
    event_retention_days: float = setting(
        30.0, "how long events are kept for streams resuming with since (older: a reset event)"
    )
    presence_grace_seconds: float = setting(
        3.0, "how long after a user's last stream closes their peers are told they went offline"
    )
    stream_queue_size: int = setting(
        1000, "events waiting for one stream; a client further behind is closed with 1013"
    )
    search_purge_seconds: float = setting(
        60.0,
        "SQLite: the words of edited and deleted messages leave the search index's segments"
        " this long after the change, at the latest",
    )
    cors_origins: str | None = setting(
        None, "comma-separated origins allowed to call the API from a browser (CORS off if unset)"
    )
    # Abuse limits (docs/security.md). Rates are per second; a burst is how many requests
    # may come at once before the rate applies (a token bucket).
    rate_limits: str = setting("on", "on, or off to switch every request-rate limit off")
    send_rate: float = setting(10.0, "sends and other writes per user: requests per second")
    send_burst: int = setting(30, "sends and other writes per user: burst")
    read_rate: float = setting(50.0, "reads per user: requests per second")
    read_burst: int = setting(100, "reads per user: burst")
    signup_rate: float = setting(0.1, "sign-ups per client address: requests per second")
    signup_burst: int = setting(10, "sign-ups per client address: burst")
    token_rate: float = setting(0.5, "token requests per client address: requests per second")
    token_burst: int = setting(20, "token requests per client address: burst")
    max_streams_per_user: int = setting(
        20, "open streams per user (with Redis, on every node); the next is refused (4429, 429)"
    )
    max_connections_per_address: int = setting(
        1000, "open connections per client address and worker; more are closed at once (uvicorn)"
    )
    max_connections: int = setting(
        10000, "open connections per worker, lowered to fit the file-descriptor limit (uvicorn)"
    )
    header_timeout_seconds: float = setting(
        10.0, "time to receive a whole request head, however slowly it trickles in"
    )
    keepalive_timeout_seconds: int = setting(
        5, "idle keep-alive connections are closed after this many whole seconds"
    )
    max_header_bytes: int = setting(
        32 * 1024, "request heads larger than this get 431 and the connection is closed"
    )
    token_ttl_days: float = setting(
        30.0, "a bearer token unused for this many days is refused (and later deleted)"
    )
    token_use_resolution_seconds: float = setting(
        3600.0, "a token's last_used_at is written at most this often, so requests stay read-only"
    )
    max_tokens_per_user: int = setting(
        100, "live tokens per user; issuing one more revokes the oldest"
    )
    login_failures_before_throttle: int = setting(
        10, "consecutive failed password checks for one account before it is throttled (429)"
    )
    login_failures_per_hour: int = setting(
        100, "failed password checks evaluated per account per hour, at most"
    )
    login_backoff_max_seconds: float = setting(
        900.0, "a throttled account waits 1 s, 2 s, 4 s … up to this long between checks"
    )
    # One hash already runs its 4 lanes on 4 threads: on small machines a second one only
    # makes both slower (and holds 64 MiB more). Raise it on machines with many cores.
    hash_concurrency: int = setting(
        1, "password hashes computed at once (64 MiB each); the rest queue, fairly by address"
    )

    registration: str = setting(
        "open", "who may sign up: open (anyone), invite (with a code), closed (the CLI only)"
    )
    metrics_addr: str | None = setting(
        None, "host:port serving Prometheus metrics (never the public port); unset: off"
    )
    log_format: str = setting("text", "text, or json (one JSON object per line, per request)")

    def __post_init__(self) -> None:
        validate(self)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given non-None values replaced (used for CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def env_name(name: str) -> str:
    return f"CHAT_{name.upper()}"


ENV_NAMES = {f.name: env_name(f.name) for f in fields(Settings)}
# The value type of each field, with ``| None`` left out.
FIELD_TYPES: dict[str, type] = {
    name: next(t for t in (int, float, str) if t == hint or t in getattr(hint, "__args__", ()))
    for name, hint in get_type_hints(Settings).items()
}


def help_text(name: str) -> str:
    """The help of a field, as its flag shows it."""
    return str(next(f.metadata["help"] for f in fields(Settings) if f.name == name))


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``CHAT_*`` variables; raise ConfigError with one clear line."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, var in ENV_NAMES.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        if FIELD_TYPES[name] is int:
            values[name] = parse_int(var, raw)
        elif FIELD_TYPES[name] is float:
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
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def database_scheme(url: str) -> str:
    """'sqlite' or 'postgresql' for any accepted form (driver suffixes included)."""
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    return "postgresql" if scheme in ("postgres", "postgresql") else scheme


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``sqlite:////abs`` for absolute paths)."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return path or ":memory:"


# Numbers that must be above zero (ports and log levels have their own rules).
POSITIVE = (
    "workers",
    "ws_ping_interval",
    "ws_ping_timeout",
    "max_body_bytes",
    "idempotency_ttl_seconds",
    "last_seen_resolution_seconds",
    "token_cache_seconds",
    "stream_queue_size",
    "event_retention_days",
    "search_purge_seconds",
    "presence_grace_seconds",
    "send_rate",
    "send_burst",
    "read_rate",
    "read_burst",
    "signup_rate",
    "signup_burst",
    "token_rate",
    "token_burst",
    "max_streams_per_user",
    "max_connections_per_address",
    "max_connections",
    "header_timeout_seconds",
    "keepalive_timeout_seconds",
    "max_header_bytes",
    "token_ttl_days",
    "token_use_resolution_seconds",
    "max_tokens_per_user",
    "login_failures_before_throttle",
    "login_failures_per_hour",
    "login_backoff_max_seconds",
    "hash_concurrency",
)


def validate(settings: Settings) -> None:
    validate_urls(settings)
    if not 0 < settings.port < 65536:
        raise ConfigError(f"CHAT_PORT must be between 1 and 65535, got {settings.port}")
    for name in POSITIVE:
        value = getattr(settings, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{ENV_NAMES[name]} must be above 0, got {value}")
    if settings.server not in SERVERS:
        raise ConfigError(f"CHAT_SERVER must be one of {', '.join(SERVERS)}")
    if settings.rate_limits not in ("on", "off"):
        raise ConfigError(f"CHAT_RATE_LIMITS must be on or off, got {settings.rate_limits!r}")
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"CHAT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    validate_choices(settings)


def validate_choices(settings: Settings) -> None:
    for name, choices in (("registration", REGISTRATION_MODES), ("log_format", LOG_FORMATS)):
        if getattr(settings, name) not in choices:
            raise ConfigError(f"{ENV_NAMES[name]} must be one of {', '.join(choices)}")
    if settings.metrics_addr is not None and metrics_address(settings.metrics_addr)[1] == (
        settings.port
    ):
        raise ConfigError("CHAT_METRICS_ADDR must not use the public port (CHAT_PORT)")


def metrics_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6) as (host, port); ConfigError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"CHAT_METRICS_ADDR must look like 127.0.0.1:9100, got {value!r}")
    return host.strip("[]"), int(port)


def validate_urls(settings: Settings) -> None:
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


def redact(url: str) -> str:
    """The URL with its password replaced, so it can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
