"""/healthz: 200 while the database answers, 503 while it does not (also a real outage)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql

from chatserver import actions
from chatserver.config import Settings
from chatserver.errors import Unavailable
from testinfra.postgres import PostgresServer
from tests.helpers import concurrent_app

Client = AsyncTestClient  # type: ignore[type-arg]


async def test_healthz_is_200_when_the_database_answers(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


async def test_healthz_needs_no_authentication(client: Client) -> None:
    r = await client.get("/healthz", headers={"Authorization": "Bearer junk"})
    assert r.status_code == 200, r.text


class BrokenDatabase:
    """Stands in for a database whose every statement fails."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dialect = inner.dialect

    async def ping(self) -> None:
        raise OSError("connection refused")

    async def close(self) -> None:
        await self.inner.close()


async def test_healthz_is_503_when_the_database_fails(settings: Settings) -> None:
    async with concurrent_app(settings) as (app, client):
        services = app.state.services
        real = services.db
        services.db = BrokenDatabase(real)
        try:
            r = await client.get("/healthz")
        finally:
            services.db = real
        assert r.status_code == 503, r.text
        assert (await client.get("/healthz")).status_code == 200


def _block_connections(server: PostgresServer, dbname: str, blocked: bool) -> None:
    allow = sql.SQL("false" if blocked else "true")
    server.admin.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(dbname), allow)
    )
    if blocked:
        server.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )


async def test_healthz_follows_a_real_postgres_outage(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    settings = Settings(database_url=postgres_url)
    dbname = postgres_url.rsplit("/", 1)[1]
    async with concurrent_app(settings) as (app, client):
        assert (await client.get("/healthz")).status_code == 200
        await asyncio.to_thread(_block_connections, postgres_server, dbname, True)
        try:
            down = await client.get("/healthz")
            # A write that fails in the outage (as a background purge's may) must not
            # keep the node unhealthy once the database is back.
            with pytest.raises(Unavailable):
                await actions.forget_expired_idempotency_keys(app.state.services)
        finally:
            await asyncio.to_thread(_block_connections, postgres_server, dbname, False)
        assert down.status_code == 503, down.text
        assert (await client.get("/healthz")).status_code == 200
