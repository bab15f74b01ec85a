"""``chatserver serve`` that cannot start: one clear line on stderr, no traceback.

``chatserver migrate``: test_migrations.py; settings and their errors: test_config.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.helpers import run_cli

BAD_SERVE_SETTINGS = {
    "port not a number": ({"CHAT_PORT": "abc"}, [], "CHAT_PORT"),
    "port out of range": ({"CHAT_PORT": "70000"}, [], "CHAT_PORT"),
    "port flag zero": ({}, ["--port", "0"], "65535"),
    "unknown database": ({"CHAT_DATABASE_URL": "mysql://u:p@h/db"}, [], "CHAT_DATABASE_URL"),
    "unwritable sqlite": (
        {"CHAT_DATABASE_URL": "sqlite:////nonexistent/dir/chat.db"},
        [],
        "sqlite:////nonexistent/dir/chat.db",
    ),
    "unreachable postgres": (
        {"CHAT_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db"},
        [],
        "127.0.0.1:1",
    ),
    "log level": ({"CHAT_LOG_LEVEL": "loud"}, [], "CHAT_LOG_LEVEL"),
    "workers zero": ({"CHAT_WORKERS": "0"}, [], "CHAT_WORKERS"),
    "workers without redis": ({"CHAT_WORKERS": "2"}, [], "CHAT_REDIS_URL"),
    "redis url": ({"CHAT_REDIS_URL": "http://localhost"}, [], "CHAT_REDIS_URL"),
    "registration": ({"CHAT_REGISTRATION": "sometimes"}, [], "CHAT_REGISTRATION"),
    "log format": ({"CHAT_LOG_FORMAT": "xml"}, [], "CHAT_LOG_FORMAT"),
    "metrics address": ({"CHAT_METRICS_ADDR": "9100"}, [], "CHAT_METRICS_ADDR"),
    "metrics on the public port": (
        {"CHAT_METRICS_ADDR": "127.0.0.1:8000"},
        [],
        "must not use the public port",
    ),
}


@pytest.mark.parametrize("case", BAD_SERVE_SETTINGS)
def test_serve_with_a_bad_setting_stops_with_one_clear_line(tmp_path: Path, case: str) -> None:
    env, flags, mentions = BAD_SERVE_SETTINGS[case]
    result = run_cli("serve", *flags, env=env, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("chatserver: ")
    assert mentions in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_serve_on_a_port_in_use_fails_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "CHAT_PORT": str(port)}
        result = run_cli("serve", env=env, cwd=tmp_path)
    output = result.stderr + result.stdout
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert "in use" in output.lower()
