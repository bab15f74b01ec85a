"""Test helpers: the public HTTP API as a client sees it, and the few ways around it that
tests need (the database itself, statement counts, the command line)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from chatserver.app import create_app
from chatserver.config import Settings
from chatserver.migrations import upgrade

PASSWORD = "correct horse battery"
MESSAGE_FIELDS = {
    "id",
    "sent_by",
    "received_by",
    "message",
    "sent_at",
    "received_at",
    "edited_at",
    "deleted_at",
    "reply_to",
}
_names = itertools.count(1)
CLI_TIMEOUT = 60


@dataclass
class User:
    id: int
    username: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def basic(self) -> dict[str, str]:
        raw = base64.b64encode(f"{self.username}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}


class Api:
    """Thin wrapper: sign up, log in, send, read — each asserting the happy status."""

    def __init__(self, client: AsyncTestClient) -> None:  # type: ignore[type-arg]
        self.client = client

    async def signup(self, username: str | None = None) -> User:
        name = username or f"user{next(_names)}"
        email = f"{name}@example.com"
        r = await self.client.post(
            "/api/v1/users/", json={"username": name, "email": email, "password": PASSWORD}
        )
        assert r.status_code == 201, r.text
        token = await self.login(name)
        return User(r.json()["id"], name, email, token)

    async def login(self, username: str, password: str = PASSWORD) -> str:
        r = await self.client.post(
            "/api/v1/auth/token/", json={"username": username, "password": password}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    async def send(self, sender: User, to: int, text: str = "hello", **headers: str) -> Any:
        r = await self.client.post(
            "/api/v1/chats/",
            json={"user_id": to, "message": text},
            headers={**sender.auth, **headers},
        )
        assert r.status_code == 201, r.text
        return r.json()

    async def inbox(self, user: User, **params: Any) -> Any:
        r = await self.client.get("/api/v1/chats/", params=params, headers=user.auth)
        assert r.status_code == 200, r.text
        return r.json()

    async def get(self, path: str, user: User | None = None, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=user.auth if user else {})


def assert_problem(r: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``, naming each of ``fields``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert body["detail"]
    for field in fields:
        assert field in body.get("errors", {}), body
    return body


def ids(page: dict[str, Any]) -> list[int]:
    """The ids of a page of messages, in the page's order."""
    return [m["id"] for m in page["messages"]]


async def send_many(api: Api, sender: User, to: int, count: int, batch: int = 25) -> list[int]:
    """Send ``count`` messages, ``batch`` at a time concurrently; return their ids."""
    sent: list[int] = []
    for start in range(0, count, batch):
        texts = [f"message {n}" for n in range(start, min(start + batch, count))]
        replies = await asyncio.gather(*(api.send(sender, to, text) for text in texts))
        sent.extend(reply["id"] for reply in replies)
    return sent


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Api]:
    """An app on an already migrated database, for as long as the block runs (a node)."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield Api(client)


# ---------------------------------------------------------------- more helpers

# RFC 3339 in UTC with a trailing Z, fractional seconds allowed.
UTC_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def assert_utc_timestamp(value: Any) -> datetime:
    """``value`` is an RFC 3339 UTC timestamp ending in ``Z``; return it parsed."""
    assert isinstance(value, str), value
    assert UTC_TIMESTAMP_RE.fullmatch(value), value
    return datetime.fromisoformat(value)


async def post_raw(
    client: AsyncTestClient,  # type: ignore[type-arg]
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> httpx.Response:
    """POST ``body`` exactly as given (no JSON encoding), with ``content_type``."""
    return await client.post(
        path, content=body, headers={"Content-Type": content_type, **(headers or {})}
    )


class CountingConn:
    """A ``chatserver.db.Conn`` that records every statement it runs."""

    def __init__(self, inner: Any, statements: list[str]) -> None:
        self._inner = inner
        self._statements = statements

    async def fetch_all(self, sql: str, *args: Any) -> Any:
        self._statements.append(sql)
        return await self._inner.fetch_all(sql, *args)

    async def fetch_one(self, sql: str, *args: Any) -> Any:
        self._statements.append(sql)
        return await self._inner.fetch_one(sql, *args)

    async def fetch_val(self, sql: str, *args: Any) -> Any:
        self._statements.append(sql)
        return await self._inner.fetch_val(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self._statements.append(sql)
        return await self._inner.execute(sql, *args)

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._statements.append(sql)
        await self._inner.execute_many(sql, rows)


class CountingDatabase:
    """Wraps the app's ``chatserver.db.Database``; ``statements`` lists the SQL it ran."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.dialect = inner.dialect
        self.statements: list[str] = []

    @asynccontextmanager
    async def read(self) -> AsyncIterator[CountingConn]:
        async with self._inner.read() as conn:
            yield CountingConn(conn, self.statements)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[CountingConn]:
        async with self._inner.transaction() as conn:
            yield CountingConn(conn, self.statements)

    async def ping(self) -> None:
        await self._inner.ping()

    async def close(self) -> None:
        await self._inner.close()


def count_statements(app: Litestar) -> CountingDatabase:
    """Swap a counting proxy in front of the running app's database and return it."""
    services = app.state.services
    counting = CountingDatabase(services.db)
    services.db = counting
    return counting


def query_database(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one read-only statement straight against a test database (outside the app)."""
    if database_url.startswith("sqlite"):
        with closing(sqlite3.connect(database_url.split(":///", 1)[1])) as conn:
            return list(conn.execute(sql).fetchall())
    with psycopg.connect(database_url) as conn:
        return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``chatserver ARGS`` with only the given CHAT_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@asynccontextmanager
async def concurrent_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests really run concurrently: the app runs in this event loop.

    Litestar's AsyncTestClient hands every request to a portal thread and blocks until it
    is answered, so requests "raced" with asyncio.gather through it run one after another.
    """
    async with concurrent_app(settings) as (_, client):
        yield client


@asynccontextmanager
async def concurrent_app(
    settings: Settings,
) -> AsyncIterator[tuple[Litestar, httpx.AsyncClient]]:
    """`concurrent_client` and its app, running (and migrated) in this event loop."""
    await asyncio.to_thread(upgrade, settings.database_url)
    app = create_app(settings)
    async with (
        _lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield app, client


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    """Run the app's lifespan in a task of its own: its task groups must start and stop in
    one task, and a pytest fixture sets up and tears down in different ones."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    ready = asyncio.create_task(started.wait())
    await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        ready.cancel()
        task.cancel()
        raise RuntimeError("the app did not start within 30 s") from (
            task.exception() if task.done() and not task.cancelled() else None
        )
    try:
        yield
    finally:
        stop.set()
        await task


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def assert_401(r: httpx.Response) -> dict[str, Any]:
    """A 401 problem that says how to authenticate."""
    problem = assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"]
    return problem
