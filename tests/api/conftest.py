"""Fixtures of the API tests that need a real socket: the app served in this process
(``serve_in_thread``) on each database, one server per test module and database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from argon2 import PasswordHasher

from chatserver import passwords
from chatserver.config import Settings
from testinfra.postgres import PostgresServer
from tests.helpers import NO_LIMITS, TEST_LIMITS
from tests.realtime_helpers import LiveServer, serve_in_thread


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign-ups with argon2's lightest parameters (the server runs in this process), for the
    modules whose subject is not passwords: the default cost dominates their time on a busy
    machine. A module asks for it with ``pytestmark``."""
    monkeypatch.setattr(passwords, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024))


def limits(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The limits of a module's server: off when the module is marked ``bulk``."""
    return NO_LIMITS if request.node.get_closest_marker("bulk") else TEST_LIMITS


@pytest.fixture(scope="module")
def sqlite_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "chat.db"
    with serve_in_thread(Settings(database_url=f"sqlite:///{path}", **limits(request))) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_server_app(
    request: pytest.FixtureRequest, postgres_server: PostgresServer
) -> Iterator[LiveServer]:
    name = postgres_server.create_database()
    settings = Settings(database_url=postgres_server.url(name), **limits(request))
    try:
        with serve_in_thread(settings) as server:
            yield server
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest) -> LiveServer:
    """The app on each database (one server per module and database)."""
    fixture = "sqlite_server" if request.param == "sqlite" else "postgres_server_app"
    live: LiveServer = request.getfixturevalue(fixture)
    return live


@dataclass
class Node:
    """A live server and the URL of its database (for the tests that read it directly)."""

    live: LiveServer
    database_url: str

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def ws_url(self) -> str:
        return self.live.ws_url


# Edited and deleted words leave SQLite's search index this soon (a test waits for it).
PURGE_SECONDS = 0.2


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """The app on each database, with its database's URL (one per module and database)."""
    if request.param == "sqlite":
        name = request.module.__name__.rsplit(".", 1)[-1]
        url = f"sqlite:///{tmp_path_factory.mktemp(name) / 'chat.db'}"
        with serve_in_thread(
            Settings(database_url=url, search_purge_seconds=PURGE_SECONDS, **limits(request))
        ) as live:
            yield Node(live, url)
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    database = postgres.create_database()
    url = postgres.url(database)
    try:
        with serve_in_thread(Settings(database_url=url, **limits(request))) as live:
            yield Node(live, url)
    finally:
        postgres.drop_database(database)
