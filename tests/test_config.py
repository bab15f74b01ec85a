"""Settings, their CHAT_* variables and flags, and start-up with a bad one (real processes)."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from chatserver.cli import build_parser, server_command
from chatserver.config import (
    ENV_NAMES,
    ConfigError,
    Settings,
    database_scheme,
    redact,
    settings_from_env,
)

TIMEOUT = 60


def serve_flags() -> dict[str, list[str]]:
    """Each option of ``chatserver serve``: its destination and its spellings."""
    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    serve = commands.choices["serve"]
    return {a.dest: a.option_strings for a in serve._actions if a.dest != "help"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(*argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command with only the given CHAT_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return subprocess.run(
        argv, env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_every_setting_has_a_chat_variable_and_a_serve_flag() -> None:
    names = [f.name for f in fields(Settings)]
    flags = serve_flags()
    assert list(ENV_NAMES) == names
    for name in names:
        assert ENV_NAMES[name] == "CHAT_" + name.upper()
        assert flags[name] == ["--" + name.replace("_", "-")]
    assert set(flags) == set(names)


def test_every_variable_is_read() -> None:
    values = {
        "CHAT_WS_PING_INTERVAL": "7.5",
        "CHAT_WS_PING_TIMEOUT": "3",
        "CHAT_MAX_BODY_BYTES": "1000",
        "CHAT_IDEMPOTENCY_TTL_SECONDS": "90000",
        "CHAT_LAST_SEEN_RESOLUTION_SECONDS": "2",
        "CHAT_TOKEN_CACHE_SECONDS": "5",
        "CHAT_STREAM_QUEUE_SIZE": "10",
        "CHAT_SERVER": "granian",
    }
    settings = settings_from_env(values)
    assert (settings.ws_ping_interval, settings.ws_ping_timeout) == (7.5, 3.0)
    assert (settings.max_body_bytes, settings.idempotency_ttl_seconds) == (1000, 90000)
    assert (settings.last_seen_resolution_seconds, settings.token_cache_seconds) == (2.0, 5.0)
    assert (settings.stream_queue_size, settings.server) == (10, "granian")


def test_the_ping_flags_reach_the_server_command() -> None:
    settings = Settings(ws_ping_interval=5, ws_ping_timeout=9)
    argv = server_command(settings)
    assert argv[argv.index("--ws-ping-interval") + 1] == "5"
    assert argv[argv.index("--ws-ping-timeout") + 1] == "9"


def test_the_connection_limits_reach_the_server_command() -> None:
    argv = server_command(Settings(keepalive_timeout_seconds=3))
    assert argv[argv.index("--http") + 1] == "chatserver.connections:GuardedHttpToolsProtocol"
    assert argv[argv.index("--timeout-keep-alive") + 1] == "3"
    assert "--no-access-log" in argv
    granian = server_command(Settings(server="granian", header_timeout_seconds=4))
    assert granian[granian.index("--http1-header-read-timeout") + 1] == "4000"
    assert "--no-access-log" in granian


def test_serve_help_names_every_variable_with_its_true_default(tmp_path: Path) -> None:
    result = run(sys.executable, "-m", "chatserver", "serve", "--help", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    defaults = Settings()
    for name, var in ENV_NAMES.items():
        value = getattr(defaults, name)
        shown = "unset" if value is None else f"{value:g}" if isinstance(value, float) else value
        assert f"({var}, default: {shown})" in text, name
    assert "uvicorn unless --server granian" in text
    assert "(CHAT_SERVER, default: uvicorn)" in text


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"CHAT_WS_PING_INTERVAL": "nan"}, "CHAT_WS_PING_INTERVAL"),
        ({"CHAT_WS_PING_TIMEOUT": "-1"}, "CHAT_WS_PING_TIMEOUT"),
        ({"CHAT_STREAM_QUEUE_SIZE": "lots"}, "CHAT_STREAM_QUEUE_SIZE"),
        ({"CHAT_MAX_BODY_BYTES": "0"}, "CHAT_MAX_BODY_BYTES"),
        ({"CHAT_TOKEN_CACHE_SECONDS": "inf"}, "CHAT_TOKEN_CACHE_SECONDS"),
        ({"CHAT_SERVER": "gunicorn"}, "CHAT_SERVER"),
        ({"CHAT_RATE_LIMITS": "maybe"}, "CHAT_RATE_LIMITS"),
        ({"CHAT_SEND_BURST": "0"}, "CHAT_SEND_BURST"),
        ({"CHAT_SIGNUP_RATE": "-1"}, "CHAT_SIGNUP_RATE"),
        ({"CHAT_MAX_HEADER_BYTES": "0"}, "CHAT_MAX_HEADER_BYTES"),
    ],
)
def test_bad_numbers_and_names_are_one_line_errors(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions) as caught:
        settings_from_env(env)
    assert "\n" not in str(caught.value)


BAD_START = {
    "unreachable redis": ({"CHAT_REDIS_URL": "redis://127.0.0.1:1"}, [], r"Redis.*127\.0\.0\.1:1"),
    "missing sqlite folder": (
        {"CHAT_DATABASE_URL": "sqlite:////nonexistent/dir/chat.db"},
        [],
        r"/nonexistent/dir, a folder that does not exist",
    ),
    "missing relative sqlite folder": (
        {"CHAT_DATABASE_URL": "sqlite:///missing/chat.db"},
        [],
        r"points into missing, a folder",
    ),
    "unreachable postgresql": (
        {"CHAT_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db"},
        [],
        r"127\.0\.0\.1:1",
    ),
    "port flag not a number": ({}, ["--port", "abc"], r"--port must be an integer"),
    "ping flag not a number": ({}, ["--ws-ping-interval", "soon"], r"--ws-ping-interval"),
    "negative ping variable": ({"CHAT_WS_PING_TIMEOUT": "-3"}, [], r"CHAT_WS_PING_TIMEOUT"),
    "queue size variable": ({"CHAT_STREAM_QUEUE_SIZE": "x"}, [], r"CHAT_STREAM_QUEUE_SIZE"),
}


@pytest.mark.parametrize("case", BAD_START)
def test_serve_with_a_bad_setting_stops_with_one_line(tmp_path: Path, case: str) -> None:
    env, flags, mentions = BAD_START[case]
    env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", **env}
    result = run(sys.executable, "-m", "chatserver", "serve", *flags, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chatserver: ")
    assert re.search(mentions, lines[0]), lines[0]
    assert "hunter2" not in result.stderr


def test_a_worker_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    """What `chatserver serve` execs, started directly: the database fails in the worker's
    lifespan (as when its folder goes away between the start-up check and the worker).
    Redis is different: a worker starts while it is down and catches up (test_broker.py)."""
    database = f"sqlite:///{tmp_path / 'gone' / 'chat.db'}"
    env = {"CHAT_DATABASE_URL": database}
    settings = Settings(database_url=database, port=free_port())
    result = run(*server_command(settings), env=env, cwd=tmp_path)
    output = result.stderr + result.stdout
    assert result.returncode != 0, output
    assert "Traceback" not in output
    reasons = [line for line in output.splitlines() if "cannot start" in line]
    assert len(reasons) == 1, output
    assert "gone" in reasons[0] or "database" in reasons[0], reasons[0]


# ---------------------------------------------------------------- settings from CHAT_* variables


def test_defaults() -> None:
    settings = settings_from_env({})
    assert settings.database_url == "sqlite:///chat.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_settings_come_from_chat_variables() -> None:
    settings = settings_from_env(
        {
            "CHAT_DATABASE_URL": "postgresql://u:p@db:5432/chat",
            "CHAT_HOST": "10.1.2.3",
            "CHAT_PORT": "9000",
            "CHAT_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.database_url == "postgresql://u:p@db:5432/chat"
    assert (settings.host, settings.port, settings.log_level.lower()) == ("10.1.2.3", 9000, "debug")


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("sqlite:///chat.db", "sqlite"),
        ("sqlite:////var/lib/chat/chat.db", "sqlite"),
        ("postgresql://user:password@host:5432/dbname", "postgresql"),
        ("postgresql+asyncpg://user:password@host:5432/dbname", "postgresql"),
        ("postgres://user:password@host/dbname", "postgresql"),
    ],
)
def test_accepted_database_urls(url: str, scheme: str) -> None:
    settings = settings_from_env({"CHAT_DATABASE_URL": url})
    assert database_scheme(settings.database_url) == scheme


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"CHAT_PORT": "abc"}, "CHAT_PORT"),
        ({"CHAT_PORT": "0"}, "CHAT_PORT"),
        ({"CHAT_PORT": "65536"}, "CHAT_PORT"),
        ({"CHAT_DATABASE_URL": "mysql://u:p@h/db"}, "CHAT_DATABASE_URL"),
        ({"CHAT_DATABASE_URL": "chat.db"}, "CHAT_DATABASE_URL"),
        ({"CHAT_DATABASE_URL": "sqlite:chat.db"}, "CHAT_DATABASE_URL"),
        ({"CHAT_LOG_LEVEL": "loud"}, "CHAT_LOG_LEVEL"),
        ({"CHAT_WORKERS": "0"}, "CHAT_WORKERS"),
        ({"CHAT_REDIS_URL": "http://localhost"}, "CHAT_REDIS_URL"),
    ],
)
def test_bad_settings_raise_one_line_config_errors(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_env(env)
    message = str(caught.value)
    assert mentions in message
    assert "\n" not in message


def test_config_errors_never_show_the_database_password() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_env({"CHAT_DATABASE_URL": "mysql://user:hunter2@host/db"})
    assert "hunter2" not in str(caught.value)
    assert redact("postgresql://user:hunter2@host/db") == "postgresql://user:***@host/db"
