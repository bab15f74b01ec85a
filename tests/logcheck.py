"""Pytest plugin: every server log the test run writes is collected in one directory, and at
the end of the session it is searched for passwords and tokens (none may appear).

* Real server processes (`testinfra.server.ServerProcess`) write their output to
  ``$TESTINFRA_LOG_DIR``, which this plugin sets for the session (unless already set).
* Servers run inside the test process (``serve_in_thread``, the ASGI test client) log through
  Python's logging: a handler on the root logger copies every record into the same directory.
* Tests name the secrets they use with `remember`; the tests' shared password is known here.
  Besides those exact values, the check looks for what a leaked credential looks like
  (an ``Authorization`` value, a JSON ``"password"`` field).

The check runs in ``pytest_sessionfinish``, after every test, and fails the session.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from testinfra.server import LOG_DIR_ENV

SECRETS: set[str] = set()
IN_PROCESS_LOG = "in-process.log"
# What a credential looks like in a log, whatever its value.
LEAK_PATTERNS = [
    re.compile(r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9+/_=-]{20,}"),
    re.compile(r'(?i)"password"\s*:'),
    re.compile(r"(?i)[?&]token=[^&\s]+"),
]
MIN_SECRET_LENGTH = 8  # shorter values would match by chance


def remember(*secrets: str) -> None:
    """Name passwords and tokens the logs must never contain."""
    SECRETS.update(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)


def log_directory() -> Path:
    return Path(os.environ[LOG_DIR_ENV])


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(LOG_DIR_ENV):
        os.environ[LOG_DIR_ENV] = tempfile.mkdtemp(prefix="chat-test-logs-")
    handler = logging.FileHandler(log_directory() / IN_PROCESS_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    config.stash[_HANDLER] = handler


def leaks(texts: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[str]:
    """``name: what`` for every secret or credential-shaped text found in (name, text)."""
    found = []
    secrets = sorted(set(secrets))
    for name, text in texts:
        found += [f"{name}: a remembered secret ({s[:3]}…)" for s in secrets if s in text]
        found += [f"{name}: {m.group(0)[:20]}…" for p in LEAK_PATTERNS for m in p.finditer(text)]
    return found


def collected_logs(directory: Path) -> Iterable[tuple[str, str]]:
    for path in sorted(directory.rglob("*.log")):
        yield path.name, path.read_text(errors="replace")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    handler = session.config.stash.get(_HANDLER, None)
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()
    found = leaks(collected_logs(log_directory()), SECRETS)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found:
        if reporter is not None:
            reporter.write_line(f"SECRETS IN SERVER LOGS ({log_directory()}):", red=True)
            for line in found[:50]:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        count = sum(1 for _ in log_directory().rglob("*.log"))
        reporter.write_line(f"server logs checked for secrets: {count} files, none found")


_HANDLER = pytest.StashKey[logging.Handler]()
