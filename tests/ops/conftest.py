"""Fixtures and helpers of the operations tests: a database of each kind, the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLI_TIMEOUT = 120


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def chatserver(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``chatserver ARGS`` with only the given CHAT_* variables, ``stdin`` as its input."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        env={**clean, **env},
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed; it must have succeeded."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, mentions: str) -> None:
    """The command failed with ``code`` and one line on stderr naming ``mentions``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip() and "alembic" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chatserver: "), lines
    assert mentions in lines[0], lines
    assert "Traceback" not in result.stderr
