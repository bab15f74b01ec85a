"""End to end: the real ``chatserver serve`` process on a free port, spoken to over HTTP.

SQLite only: the API suite covers PostgreSQL; here the process, the HTTP server and the
disk are what is under test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from testinfra.server import ServerProcess
from testinfra.server import running_server as start
from tests.helpers import PASSWORD, assert_problem, assert_utc_timestamp

START_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0
JSON = {"Content-Type": "application/json"}


Server = ServerProcess  # started, health-checked and stopped by testinfra/server.py


@contextmanager
def running_server(workdir: Path, database: Path, **extra: str) -> Iterator[Server]:
    """``chatserver serve`` on a free port in its own process group; always stopped after."""
    env = {"CHAT_DATABASE_URL": f"sqlite:///{database}", "CHAT_LOG_LEVEL": "warning", **extra}
    with start(workdir, env, timeout=START_DEADLINE_SECONDS) as server:
        yield server


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


@pytest.fixture
def server(tmp_path: Path, database: Path) -> Iterator[Server]:
    with running_server(tmp_path, database) as running:
        yield running


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


async def signup(http: httpx.AsyncClient, name: str) -> tuple[int, dict[str, str]]:
    """Create ``name`` and log in; return (id, Bearer headers)."""
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    r = await http.post("/api/v1/users/", json=body)
    assert r.status_code == 201, r.text
    token = await http.post("/api/v1/auth/token/", json={"username": name, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return r.json()["id"], {"Authorization": f"Bearer {token.json()['token']}"}


# ---------------------------------------------------------------- the API over real HTTP


async def test_walkthrough_over_real_http(http: httpx.AsyncClient) -> None:
    alice_id, alice = await signup(http, "alice")
    bob_id, bob = await signup(http, "bob")

    sent = await http.post(
        "/api/v1/chats", json={"user_id": bob_id, "message": "hai"}, headers=alice
    )
    assert sent.status_code == 201, sent.text
    assert sent.json()["sent_by"] == alice_id
    assert_utc_timestamp(sent.json()["sent_at"])

    inbox = await http.get("/api/v1/chats/", headers=bob)
    assert inbox.status_code == 200, inbox.text
    page = inbox.json()
    assert [m["id"] for m in page["messages"]] == [sent.json()["id"]]
    assert page["meta"]["count"] == 1
    assert page["meta"]["current_page"] == "1"

    other = await http.get("/api/v1/users", params={"username": "ALICE"}, headers=bob)
    assert other.status_code == 200, other.text
    assert other.json()["id"] == alice_id
    assert "email" not in other.json()

    assert (await http.delete("/api/v1/auth/token", headers=alice)).status_code == 204
    assert_problem(await http.get("/api/v1/users/", headers=alice), 401)
    assert (await http.delete("/api/v1/users/", headers=bob)).status_code == 204


async def test_paths_answer_with_and_without_slash_without_redirects(
    http: httpx.AsyncClient,
) -> None:
    _, alice = await signup(http, "alice")
    for path in ("/api/v1/users", "/api/v1/chats", "/healthz"):
        for variant in (path, path + "/"):
            r = await http.get(variant, headers=alice, follow_redirects=False)
            assert r.status_code == 200, (variant, r.status_code)
    body = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
    r = await http.post("/api/v1/users", json=body, follow_redirects=False)
    assert r.status_code == 201, r.text


async def test_errors_are_problems_with_request_ids_over_real_http(http: httpx.AsyncClient) -> None:
    for r, status in [
        (await http.get("/nope"), 404),
        (await http.put("/api/v1/users/", json={}), 405),
        (await http.post("/api/v1/users/", content=b"{", headers=JSON), 400),
        (
            await http.post(
                "/api/v1/users/", content=b"hi", headers={"Content-Type": "text/plain"}
            ),
            415,
        ),
        (await http.post("/api/v1/users/", content=b"x" * 70_000, headers=JSON), 413),
        (await http.get("/api/v1/chats/"), 401),
    ]:
        assert_problem(r, status)
        assert r.headers.get("X-Request-ID"), (status, r.headers)
        assert "server" not in r.headers, r.headers  # the server does not name itself
        assert r.headers.get("date"), r.headers  # HTTP's Date, as an origin server with a clock


async def test_a_ten_megabyte_body_is_refused_without_a_5xx(
    http: httpx.AsyncClient, server: Server
) -> None:
    try:
        r = await http.post("/api/v1/users/", content=b"x" * (10 * 1024 * 1024), headers=JSON)
    except httpx.TransportError:
        pass  # the server may hang up before reading it all; that is a refusal too
    else:
        assert_problem(r, 413)
    assert (await http.get("/healthz")).status_code == 200
    assert server.proc.poll() is None


# ---------------------------------------------------------------- durability and shutdown


async def send_until_killed(
    base_url: str, headers: dict[str, str], to: int, total: int, kill_after: int, server: Server
) -> list[dict[str, Any]]:
    """Send ``total`` messages at once; SIGKILL the server the moment ``kill_after`` of them
    are acknowledged. Return every acknowledged message."""
    acknowledged: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def send(n: int) -> None:
            try:
                r = await client.post(
                    "/api/v1/chats/", json={"user_id": to, "message": f"m{n}"}, headers=headers
                )
            except httpx.TransportError:
                return  # in flight when the server died: never acknowledged
            assert r.status_code == 201, r.text
            acknowledged.append(r.json())
            if len(acknowledged) == kill_after:
                server.kill()

        await asyncio.gather(*(send(n) for n in range(total)))
    return acknowledged


async def test_an_acknowledged_message_survives_sigkill(tmp_path: Path, database: Path) -> None:
    with running_server(tmp_path, database) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            alice_id, alice = await signup(http, "alice")
            r = await http.post(
                "/api/v1/chats/", json={"user_id": alice_id, "message": "keep me"}, headers=alice
            )
            assert r.status_code == 201, r.text
            server.kill()  # no chance to flush or shut down cleanly
        sent = r.json()

    with running_server(tmp_path, database) as restarted:
        async with httpx.AsyncClient(base_url=restarted.base_url, timeout=30) as http:
            inbox = await http.get("/api/v1/chats/", headers=alice)  # the token survived too
            assert inbox.status_code == 200, inbox.text
            (message,) = inbox.json()["messages"]
            assert (message["id"], message["message"], message["sent_at"]) == (
                sent["id"],
                "keep me",
                sent["sent_at"],
            )


async def test_every_acknowledged_message_of_a_burst_survives_sigkill(
    tmp_path: Path, database: Path
) -> None:
    # A burst on purpose: the rate limits are off for it.
    with running_server(tmp_path, database, CHAT_RATE_LIMITS="off") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            alice_id, alice = await signup(http, "alice")
        acknowledged = await send_until_killed(
            server.base_url, alice, alice_id, total=60, kill_after=20, server=server
        )
    assert len(acknowledged) >= 20

    with running_server(tmp_path, database) as restarted:
        async with httpx.AsyncClient(base_url=restarted.base_url, timeout=30) as http:
            page = await http.get(
                "/api/v1/chats/", params={"after_id": 0, "page_size": 100}, headers=alice
            )
    stored = [m["id"] for m in page.json()["messages"]]
    assert len(stored) == len(set(stored))
    assert {m["id"] for m in acknowledged} <= set(stored)


async def test_idempotency_key_survives_sigkill(tmp_path: Path, database: Path) -> None:
    key = {"Idempotency-Key": "durable-key"}
    with running_server(tmp_path, database) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            alice_id, alice = await signup(http, "alice")
            body = {"user_id": alice_id, "message": "exactly once"}
            first = await http.post("/api/v1/chats/", json=body, headers=alice | key)
            assert first.status_code == 201, first.text
            server.kill()

    with running_server(tmp_path, database) as restarted:
        async with httpx.AsyncClient(base_url=restarted.base_url, timeout=30) as http:
            again = await http.post("/api/v1/chats/", json=body, headers=alice | key)
            assert again.status_code == 201, again.text
            assert again.json() == first.json()
            inbox = await http.get("/api/v1/chats/", headers=alice)
            assert inbox.json()["meta"]["count"] == 1


def test_sigterm_stops_the_server_promptly(server: Server) -> None:
    assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200
    os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_DEADLINE_SECONDS} s after SIGTERM:\n{server.log()}")
    assert "Traceback" not in server.log()


def test_serve_applies_migrations_before_serving(server: Server, database: Path) -> None:
    # The database did not exist before `serve`: a sign-up only works on a migrated schema.
    body = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    r = httpx.post(server.base_url + "/api/v1/users/", json=body, timeout=30)
    assert r.status_code == 201, r.text
    assert database.exists()
