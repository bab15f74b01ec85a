"""Pytest plugin: real, throwaway PostgreSQL and Redis servers for the test suite.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.servers"]``.

Fixtures:

* ``postgres_server`` (session): a PostgreSQL cluster started from the binaries under
  ``/usr/lib/postgresql/<newest>/bin`` (or ``$CHAT_PG_BINDIR``), yielding `PostgresServer`.
* ``postgres_url`` (function): ``postgresql://postgres:postgres@127.0.0.1:PORT/test_N``,
  a fresh, empty database that is dropped (WITH FORCE) after the test.
* ``redis_server`` (session): a ``redis-server`` started by pytest-redis, yielding
  `RedisServer`.
* ``redis_url`` (function): ``redis://127.0.0.1:PORT/0``, flushed before the test.

A missing server binary skips the tests that need it, or fails them when
``CHAT_REQUIRE_POSTGRES=1`` / ``CHAT_REQUIRE_REDIS=1`` is set (CI sets these so a broken
image cannot silently turn the integration tests into skips).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import port_for
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.rows import TupleRow
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_redis import factories as redis_factories
from pytest_redis.config import get_config as get_redis_config

PG_ROOT = Path("/usr/lib/postgresql")
PG_BINDIR_ENV = "CHAT_PG_BINDIR"
PG_TMPDIR_ENV = "CHAT_PG_TMPDIR"
# RAM-backed tmpfs: per-test CREATE + DROP DATABASE measured ~6 ms there versus 40-80 ms
# on an ext4 disk (each one writes and then unlinks ~300 files).
SHM_DIR = Path("/dev/shm")  # noqa: S108 - only a parent for mkdtemp, never a fixed path
SHM_MIN_FREE = 1 << 30  # Docker's default 64 MB /dev/shm is too small: fall back to disk
PG_OS_USER = "postgres"  # the unprivileged account the Debian package creates
PG_USER = "postgres"
PG_PASSWORD = "postgres"
HOST = "127.0.0.1"

PG_MISSING = (
    f"PostgreSQL binaries not found under {PG_ROOT}; install postgresql "
    f"or set {PG_BINDIR_ENV} to a directory containing pg_ctl"
)
REDIS_MISSING = (
    "redis-server not found on PATH; install redis-server "
    "or pass --redis-exec=/path/to/redis-server"
)

# Speed over durability: the cluster is thrown away at the end of the session.
# (pytest-postgresql already passes -F, i.e. fsync=off.) max_wal_size bounds how much
# RAM the WAL can take when the cluster lives on tmpfs.
PG_SERVER_OPTIONS = (
    f"-c listen_addresses={HOST} -c full_page_writes=off -c synchronous_commit=off "
    "-c max_wal_size=256MB"
)

# Password auth over TCP (trust on the socket only), so a test fails if the code under
# test loses the password somewhere, e.g. by passing str(sqlalchemy_url), which masks
# it as "***". Trust auth would hide such bugs.
PG_HBA = """\
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
"""


def _skip_or_fail(message: str, require_env: str) -> NoReturn:
    """Skip when a server binary is missing, unless the environment demands the server."""
    if os.environ.get(require_env) == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A running throwaway cluster plus an admin connection for creating databases."""

    host: str
    port: int
    user: str
    password: str
    admin: psycopg.Connection[TupleRow]
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False)

    def url(self, dbname: str) -> str:
        """Plain libpq URL: asyncpg takes it as is, SQLAlchemy after adding +driver."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def create_database(self) -> str:
        """Create a new empty database and return its name."""
        name = f"test_{next(self._names)}"
        # template0 is pristine even if some test (wrongly) modified template1.
        self.admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        )
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database even if the code under test leaked open connections to it."""
        self.admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _version_key(version_dir: Path) -> tuple[int, ...]:
    """Sort "9.6" < "15" < "16" numerically (as strings "9.6" would win); junk sorts first."""
    try:
        return tuple(int(part) for part in version_dir.name.split("."))
    except ValueError:
        return ()


def find_pg_bindir() -> Path | None:
    """$CHAT_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else pg_ctl on PATH.

    Debian/Ubuntu keep the server binaries off PATH, hence the versioned-directory search.
    """
    if override := os.environ.get(PG_BINDIR_ENV):
        return Path(override) if (Path(override) / "pg_ctl").is_file() else None
    candidates = sorted(PG_ROOT.glob("*/bin/pg_ctl"), key=lambda p: _version_key(p.parent.parent))
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _pg_missing_message() -> str:
    if override := os.environ.get(PG_BINDIR_ENV):
        return f"{PG_BINDIR_ENV}={override} contains no pg_ctl; point it at PostgreSQL's bin dir"
    return PG_MISSING


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


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _write_runuser_wrapper(base: Path, pg_ctl: Path) -> Path:
    """Create a pg_ctl stand-in that runs the real one as the postgres OS user.

    initdb and postgres refuse to run as root, and PostgreSQLExecutor has no "run as"
    option, but it only ever invokes its ``executable`` (initdb, start, status, stop,
    --version all go through pg_ctl), so swapping in this wrapper covers every call.
    ``cd /`` because the caller's working directory may be unreadable for that user.
    """
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root, but runuser (util-linux) is not on PATH", pytrace=False)
    command = shlex.join([runuser, "-u", PG_OS_USER, "--", str(pg_ctl)])
    wrapper = base / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\ncd / && exec {command} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _prepare_cluster_dir(base: Path, bindir: Path) -> tuple[Path, Path]:
    """Return (pg_ctl to use, directory the cluster may write to).

    As root, the cluster directory is handed to the postgres user, and the root-owned
    parent is made traversable (but not listable) so that user can reach it.
    """
    cluster_dir = base / "cluster"
    cluster_dir.mkdir(mode=0o700)
    if not _running_as_root():
        return bindir / "pg_ctl", cluster_dir
    try:
        owner = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        pytest.fail(
            f"running as root, but there is no {PG_OS_USER!r} OS user to own the test "
            "cluster (initdb refuses root); create one or run the tests as non-root",
            pytrace=False,
        )
    base.chmod(0o711)
    os.chown(cluster_dir, owner.pw_uid, owner.pw_gid)
    return _write_runuser_wrapper(base, bindir / "pg_ctl"), cluster_dir


def _make_pg_executor(pg_ctl: Path, cluster_dir: Path) -> PostgreSQLExecutor:
    return PostgreSQLExecutor(
        executable=str(pg_ctl),
        host=HOST,
        port=port_for.select_random(),
        datadir=str(cluster_dir / "data"),
        # Short path: unix socket paths are limited to ~107 bytes.
        unixsocketdir=str(cluster_dir),
        logfile=str(cluster_dir / "postgresql.log"),
        startparams="-w",
        dbname="postgres",
        user=PG_USER,
        postgres_options=PG_SERVER_OPTIONS,
    )


def _require_password(executor: PostgreSQLExecutor) -> psycopg.Connection[TupleRow]:
    """Set the superuser password, switch TCP to password auth, return an admin connection.

    The executor can only initdb with trust auth here: its password option writes the
    password file as root with mode 0600, which initdb (run as postgres) cannot read.
    """
    admin: psycopg.Connection[TupleRow] = psycopg.connect(
        host=HOST, port=executor.port, user=PG_USER, dbname="postgres", autocommit=True
    )
    admin.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(PG_USER), sql.Literal(PG_PASSWORD)
        )
    )
    # Written by us directly (root may write into the postgres-owned datadir; an
    # existing file keeps its owner), then picked up by the reload below.
    (Path(executor.datadir) / "pg_hba.conf").write_text(PG_HBA)
    admin.execute("SELECT pg_reload_conf()")
    return admin


def _stop_cluster(executor: PostgreSQLExecutor) -> None:
    """Stop the server (pg_ctl stop -m fast) and delete its data directory.

    Guarded by running(): executor.stop() raises if pg_ctl finds no server, which would
    hide the original error when start() itself failed.
    """
    if executor.running():
        executor.stop()
    executor.clean_directory()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL cluster for the session; stop and delete it after."""
    bindir = find_pg_bindir()
    if bindir is None:
        _skip_or_fail(_pg_missing_message(), "CHAT_REQUIRE_POSTGRES")
    with tempfile.TemporaryDirectory(prefix="chat-pg-", dir=_cluster_parent()) as tmp:
        pg_ctl, cluster_dir = _prepare_cluster_dir(Path(tmp), bindir)
        executor = _make_pg_executor(pg_ctl, cluster_dir)
        try:
            executor.start()
            with _require_password(executor) as admin:
                yield PostgresServer(HOST, executor.port, PG_USER, PG_PASSWORD, admin)
        finally:
            _stop_cluster(executor)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


# ----------------------------------------------------------------------------- Redis


@dataclass(frozen=True)
class RedisServer:
    """Address of the session's redis-server."""

    host: str
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


# The process fixture proper. port=None picks a free port. pytest-redis treats timeout=0
# ("never drop idle clients") as unset and falls back to 15 s, which could cut a pooled
# connection that sits idle during a slow test; a day is effectively "never".
# (None is documented as "random port" but missing from pytest-redis's type hints.)
_redis_proc = redis_factories.redis_proc(host=HOST, port=None, timeout=86_400)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> RedisServer:
    """Start redis-server for the session (stopped by pytest-redis at session end)."""
    # Same lookup pytest-redis does: --redis-exec / redis_exec ini, else PATH.
    executable = get_redis_config(request).exec
    if not executable or shutil.which(executable) is None:
        _skip_or_fail(REDIS_MISSING, "CHAT_REQUIRE_REDIS")
    executor = request.getfixturevalue("_redis_proc")
    return RedisServer(executor.host, executor.port)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of database 0, with every database flushed so tests start from empty."""
    url = redis_server.url(0)
    with redis.Redis.from_url(url) as client:
        client.flushall()
    return url
