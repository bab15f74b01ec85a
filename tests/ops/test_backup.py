"""``chatserver backup`` of a live database under write load, and ``chatserver restore`` into
an empty one: every message acknowledged before the backup started is there, and the SQLite
copy passes ``PRAGMA integrity_check``. On SQLite (online backup API) and PostgreSQL
(pg_dump / pg_restore)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatserver.admin import backup
from chatserver.config import ConfigError
from testinfra.postgres import PostgresServer
from testinfra.server import running_server
from tests.helpers import PASSWORD, query_database
from tests.ops.conftest import chatserver, one_line_error
from tests.realtime_helpers import wait_until

WRITERS = 4


@pytest.fixture
def empty_database_url(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[str]:
    """A second empty database of the same kind, to restore into."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


async def signup(client: httpx.AsyncClient, name: str) -> tuple[int, dict[str, str]]:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    r = await client.post("/api/v1/users/", json=body)
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/auth/token/", json={"username": name, "password": PASSWORD})
    return r.json()["user"]["id"], {"Authorization": f"Bearer {r.json()['token']}"}


async def test_backup_under_write_load_then_restore(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    env = {"CHAT_DATABASE_URL": database_url, "CHAT_RATE_LIMITS": "off"}
    path = tmp_path / "chat.backup"
    with running_server(tmp_path, env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            acked_before, acked_during = await _backup_while_sending(client, env, path, tmp_path)
    assert acked_during > 0  # the server kept acknowledging messages during the backup
    restored = {"CHAT_DATABASE_URL": empty_database_url}
    result = chatserver("restore", str(path), env=restored, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ids = {row[0] for row in query_database(empty_database_url, "SELECT id FROM messages")}
    assert acked_before <= ids
    if empty_database_url.startswith("sqlite"):
        assert query_database(empty_database_url, "PRAGMA integrity_check") == [("ok",)]
    one_line_error(chatserver("restore", str(path), env=restored, cwd=tmp_path), 1, "empty")
    one_line_error(chatserver("backup", str(path), env=env, cwd=tmp_path), 1, "already exists")


async def _backup_while_sending(
    client: httpx.AsyncClient, env: dict[str, str], path: Path, cwd: Path
) -> tuple[set[int], int]:
    """Send from several writers; back up once some are acknowledged. The ids acknowledged
    before the backup started, and how many were acknowledged while it ran."""
    jane_id, jane = await signup(client, "jane")
    john_id, john = await signup(client, "john")
    acked: list[int] = []
    stop = asyncio.Event()

    async def write(n: int) -> None:
        while not stop.is_set():
            to = john_id if n % 2 else jane_id
            r = await client.post(
                "/api/v1/chats/",
                json={"user_id": to, "message": "m"},
                headers=jane if n % 2 else john,
            )
            assert r.status_code == 201, r.text
            acked.append(r.json()["id"])

    writers = [asyncio.create_task(write(n)) for n in range(WRITERS)]
    try:
        await wait_until(lambda: _at_least(acked, 40), within=60, what="messages acknowledged")
        before = set(acked)
        result = await asyncio.to_thread(chatserver, "backup", str(path), env=env, cwd=cwd)
        during = len(acked) - len(before)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    assert result.returncode == 0, result.stderr
    return before, during


async def _at_least(items: list[int], count: int) -> bool:
    return len(items) >= count


def test_backup_refuses_a_missing_folder(tmp_path: Path) -> None:
    env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}"}
    assert chatserver("migrate", env=env, cwd=tmp_path).returncode == 0
    target = tmp_path / "no" / "such" / "folder.db"
    one_line_error(chatserver("backup", str(target), env=env, cwd=tmp_path), 1, "not a folder")


def test_a_missing_pg_dump_is_named_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A machine without the PostgreSQL client tools: nothing on PATH, nothing installed.
    monkeypatch.setattr(backup.shutil, "which", lambda _: None)
    monkeypatch.setattr(backup.glob, "glob", lambda _: [])
    with pytest.raises(ConfigError, match=r"pg_dump is not installed.*postgresql-client"):
        backup.find_pg_tool("pg_dump")
