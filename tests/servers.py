"""Pytest plugin: real, throwaway PostgreSQL and Redis servers for the test suite.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.servers"]``. The servers
themselves come from `testinfra` (shared with the benchmark).

Fixtures:

* ``postgres_server`` (session): a PostgreSQL cluster started from the binaries under
  ``/usr/lib/postgresql/<newest>/bin`` (or ``$CHAT_PG_BINDIR``), yielding `PostgresServer`.
* ``postgres_url`` (function): ``postgresql://postgres:postgres@127.0.0.1:PORT/test_N``,
  a fresh, empty database that is dropped (WITH FORCE) after the test.
* ``redis_server`` (session): a ``redis-server`` (``--redis-exec`` or the one on PATH),
  yielding `RedisServer`.
* ``redis_url`` (function): ``redis://127.0.0.1:PORT/0``, flushed before the test.

A missing server binary skips the tests that need it, or fails them when
``CHAT_REQUIRE_POSTGRES=1`` / ``CHAT_REQUIRE_REDIS=1`` is set (CI sets these so a broken
image cannot silently turn the integration tests into skips).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from pytest_redis.config import get_config as get_redis_config

from testinfra.postgres import PostgresNotFound, PostgresServer
from testinfra.redis import RedisNotFound, RedisServer

PG_TMPDIR_ENV = "CHAT_PG_TMPDIR"
# RAM-backed tmpfs: per-test CREATE + DROP DATABASE measured ~6 ms there versus 40-80 ms
# on an ext4 disk (each one writes and then unlinks ~300 files).
SHM_DIR = Path("/dev/shm")  # noqa: S108 - only a parent for mkdtemp, never a fixed path
SHM_MIN_FREE = 1 << 30  # Docker's default 64 MB /dev/shm is too small: fall back to disk

# Speed over durability: the cluster is thrown away at the end of the session.
# max_wal_size bounds how much RAM the WAL can take when the cluster lives on tmpfs.
PG_TEST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_wal_size": "256MB",
}


def _skip_or_fail(message: str, require_env: str) -> NoReturn:
    """Skip when a server binary is missing, unless the environment demands the server."""
    if os.environ.get(require_env) == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _cluster_parent() -> str | None:
    """Where to put the cluster: $CHAT_PG_TMPDIR, else /dev/shm if roomy, else $TMPDIR."""
    if override := os.environ.get(PG_TMPDIR_ENV):
        return override
    try:
        stat = os.statvfs(SHM_DIR)
    except OSError:
        return None
    roomy = stat.f_bavail * stat.f_frsize >= SHM_MIN_FREE
    return str(SHM_DIR) if roomy and os.access(SHM_DIR, os.W_OK) else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL cluster for the session; stop and delete it after."""
    try:
        server = PostgresServer(PG_TEST_SETTINGS, parent=_cluster_parent())
    except PostgresNotFound as exc:
        _skip_or_fail(str(exc), "CHAT_REQUIRE_POSTGRES")
    with server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """Start redis-server for the session; stop it after."""
    # pytest-redis's option: --redis-exec / the redis_exec ini value, else PATH.
    executable = get_redis_config(request).exec
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"), executable or None)
    except RedisNotFound as exc:
        _skip_or_fail(f"{exc}, or pass --redis-exec=/path/to/redis-server", "CHAT_REQUIRE_REDIS")
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of database 0, with every database flushed so tests start from empty."""
    url = redis_server.url(0)
    with redis.Redis.from_url(url) as client:
        client.flushall()
    return url
