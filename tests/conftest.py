"""Fixtures: every test gets its own app on its own fresh database, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from chatserver.app import create_app
from chatserver.config import Settings
from chatserver.migrations import upgrade
from tests.helpers import NO_LIMITS, TEST_LIMITS, Api, concurrent_client

pytest_plugins = ["tests.servers", "tests.logcheck"]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'chat.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture
def settings(request: pytest.FixtureRequest, database_url: str) -> Settings:
    limits = NO_LIMITS if request.node.get_closest_marker("bulk") else TEST_LIMITS
    return Settings(database_url=database_url, **limits)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    # Alembic's env runs its own event loop for PostgreSQL, so migrate from a thread.
    await asyncio.to_thread(upgrade, settings.database_url)
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def api(client: AsyncTestClient) -> Api:  # type: ignore[type-arg]
    return Api(client)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Api]:
    """Like ``api``, but requests sent together really race (see concurrent_client)."""
    async with concurrent_client(settings) as client:
        yield Api(client)  # type: ignore[arg-type]
