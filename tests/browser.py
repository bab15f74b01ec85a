"""Debian's Chromium for the browser tests, launched by its path through Playwright (never a
browser downloaded by a tool: there is no internet here, and CI installs the package)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # sessions and CI run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The browser's path; skips (before a server starts) only when it is absent and
    CHAT_REQUIRE_BROWSER is not set."""
    if shutil.which(CHROMIUM) or Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CHAT_REQUIRE_BROWSER"):
        pytest.fail(f"CHAT_REQUIRE_BROWSER is set but there is no browser at {CHROMIUM}")
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)")
