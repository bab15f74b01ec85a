"""Safe errors and safe headers, against a real ``chatserver serve``: a database that
crashes, restarts or fills its disk gives 503 (never 500); malformed input gives 400;
no credentials gives 401 whatever the body; OPTIONS, caching, sniffing, referrers, CORS."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from testinfra import procs
from testinfra.postgres import PostgresNotFound, PostgresServer
from testinfra.server import ServerProcess, running_server
from tests.helpers import Api, User
from tests.realtime_helpers import wait_until

_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("safe-errors")
    env = {"CHAT_DATABASE_URL": f"sqlite:///{workdir / 'chat.db'}"}
    with running_server(workdir, env) as running:
        yield running


async def new_user(server: ServerProcess) -> User:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        return await Api(client).signup(f"safe{next(_names)}")  # type: ignore[arg-type]


def raw(server: ServerProcess, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    """Send exactly these bytes; the status, headers (lower-case) and JSON body."""
    with socket.create_connection((procs.HOST, server.port), timeout=30) as sock:
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        sock.sendall(head + length + b"Connection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_text, _, payload = data.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(payload) if payload else None


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("value", ["²".encode(), b"9" * 5000], ids=["superscript", "5000-digits"])
async def test_a_bad_last_event_id_is_400(server: ServerProcess, value: bytes) -> None:
    alice = await new_user(server)
    head = (
        b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
        b"Authorization: Bearer " + alice.token.encode() + b"\r\nLast-Event-ID: " + value + b"\r\n"
    )
    status, headers, body = raw(server, head)
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert list(body["errors"]) == ["Last-Event-ID"]


async def test_a_lone_surrogate_in_a_json_string_is_400_naming_the_field(
    server: ServerProcess,
) -> None:
    alice, bob = await new_user(server), await new_user(server)
    body = b'{"user_id": %d, "message": "a\\ud800b"}' % bob.id
    head = (
        b"POST /api/v1/chats/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + alice.token.encode() + b"\r\n"
    )
    status, _, problem = raw(server, head, body)
    assert status == 400, problem
    assert "message" in problem["errors"], problem


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"user_id": "x"}'),
        ("text/plain", b"hello"),
        ("application/json", b"{"),
        ("application/json", b"x" * 200_000),
    ],
    ids=["invalid-fields", "text", "broken-json", "too-large"],
)
def test_no_credentials_is_401_whatever_the_body(
    server: ServerProcess, content_type: str, body: bytes
) -> None:
    r = httpx.post(
        f"{server.base_url}/api/v1/chats/",
        content=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert r.status_code == 401, r.text
    assert "WWW-Authenticate" in r.headers


def test_options_lists_every_method_of_the_path(server: ServerProcess) -> None:
    r = httpx.options(f"{server.base_url}/api/v1/users/", timeout=30)
    assert r.status_code == 204
    assert set(r.headers["Allow"].split(", ")) == {"DELETE", "GET", "OPTIONS", "POST"}
    r = httpx.options(f"{server.base_url}/api/v1/chats/", timeout=30)
    assert set(r.headers["Allow"].split(", ")) == {"GET", "OPTIONS", "POST"}


# ---------------------------------------------------------------- headers


async def test_api_answers_are_not_cached_sniffed_or_referred(server: ServerProcess) -> None:
    alice = await new_user(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        answers = [
            await client.get("/api/v1/chats/", headers=alice.auth),
            await client.get("/api/v1/chats/"),  # 401
            await client.get("/api/v1/nothing-here"),  # 404 from the router
            await client.get("/healthz"),
        ]
    for r in answers:
        assert r.headers["Cache-Control"] == "no-store", r.url
        assert r.headers["X-Content-Type-Options"] == "nosniff", r.url
        assert r.headers["Referrer-Policy"] == "no-referrer", r.url


def test_the_docs_page_has_a_strict_content_security_policy(server: ServerProcess) -> None:
    r = httpx.get(f"{server.base_url}/docs", timeout=30)
    assert r.status_code == 200
    policy = dict(
        ([*part.strip().split(" ", 1), ""])[:2]
        for part in r.headers["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'"
    assert "unsafe" not in r.headers["Content-Security-Policy"]
    assert "*" not in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_cors_is_off_by_default(server: ServerProcess) -> None:
    preflight = {
        "Origin": "https://elsewhere.example",
        "Access-Control-Request-Method": "POST",
    }
    r = httpx.options(f"{server.base_url}/api/v1/chats/", headers=preflight, timeout=30)
    assert "Access-Control-Allow-Origin" not in r.headers
    r = httpx.get(f"{server.base_url}/healthz", headers={"Origin": preflight["Origin"]}, timeout=30)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_allows_only_the_listed_origins(tmp_path: Path) -> None:
    env = {
        "CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "CHAT_CORS_ORIGINS": "https://chat.example",
    }
    with running_server(tmp_path, env) as cors:
        url = f"{cors.base_url}/api/v1/chats/"
        asked = {"Access-Control-Request-Method": "POST"}
        r = httpx.options(url, headers={"Origin": "https://chat.example", **asked}, timeout=30)
        assert r.headers["Access-Control-Allow-Origin"] == "https://chat.example"
        r = httpx.options(url, headers={"Origin": "https://evil.example", **asked}, timeout=30)
        assert r.headers.get("Access-Control-Allow-Origin") != "https://evil.example"


# ---------------------------------------------------------------- SQLite disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (mounting needs root: skipped without it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    with path.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


async def test_healthz_is_503_while_writes_fail_on_a_full_disk(
    small_disk: Path, tmp_path: Path
) -> None:
    env = {"CHAT_DATABASE_URL": f"sqlite:///{small_disk / 'chat.db'}", "CHAT_RATE_LIMITS": "off"}
    with running_server(tmp_path, env) as full:
        alice, bob = await new_user(full), await new_user(full)
        fill(small_disk / "filler")
        async with httpx.AsyncClient(base_url=full.base_url, timeout=30) as client:
            statuses = []
            for i in range(2000):  # until a write needs a page the disk does not have
                r = await client.post(
                    "/api/v1/chats/",
                    json={"user_id": bob.id, "message": f"{i:0>500}"},
                    headers=alice.auth,
                )
                statuses.append(r.status_code)
                if r.status_code != 201:
                    break
            assert statuses[-1] == 503, statuses[-5:]
            assert "Retry-After" in r.headers
            health = await client.get("/healthz")
            assert health.status_code == 503, health.text
            assert "Retry-After" in health.headers
            (small_disk / "filler").unlink()

            async def healthy() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await wait_until(healthy, 20, "healthz 200 once the disk has room")


# ---------------------------------------------------------------- PostgreSQL crash


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own (it is crashed), durable as in production."""
    try:
        cluster = PostgresServer()
    except PostgresNotFound as exc:
        pytest.skip(str(exc))
    with cluster:
        yield cluster


async def writer(
    client: httpx.AsyncClient, sender: User, to: int, stop: asyncio.Event, log: list[Any]
) -> None:
    """Send until ``stop``; log (status, id, retry-after, body) of every answer."""
    while not stop.is_set():
        key = uuid.uuid4().hex
        try:
            r = await client.post(
                "/api/v1/chats/",
                json={"user_id": to, "message": key},
                headers={**sender.auth, "Idempotency-Key": key},
            )
        except httpx.HTTPError as exc:  # the server itself must stay up
            log.append((0, None, None, repr(exc)))
            continue
        body = r.json()
        log.append((r.status_code, body.get("id"), r.headers.get("Retry-After"), body))
        if r.status_code != 201:
            await asyncio.sleep(0.05)


async def test_a_postgresql_crash_under_writers_gives_503_never_500_and_keeps_every_201(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    database = own_postgres.create_database()
    url = own_postgres.url(database)
    env = {"CHAT_DATABASE_URL": url, "CHAT_RATE_LIMITS": "off", "CHAT_LOG_LEVEL": "warning"}
    with running_server(tmp_path, env) as node:
        users = [await new_user(node) for _ in range(4)]
        log: list[Any] = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as client:
            tasks = [
                asyncio.create_task(writer(client, users[i], users[(i + 1) % 4].id, stop, log))
                for i in range(4)
            ]

            async def some_sent(count: int) -> bool:
                return sum(1 for entry in log if entry[0] == 201) >= count

            await wait_until(lambda: some_sent(20), 30, "sends before the crash")
            await asyncio.to_thread(own_postgres.crash)
            before = len(log)
            await wait_until(lambda: _has(log[before:], 503), 30, "503s while PostgreSQL is down")
            await asyncio.to_thread(own_postgres.restart)
            after = sum(1 for entry in log if entry[0] == 201)
            await wait_until(lambda: some_sent(after + 20), 60, "sends after the restart")
            stop.set()
            await asyncio.gather(*tasks)
        assert {entry[0] for entry in log} <= {201, 503}, [e for e in log if e[0] not in (201, 503)]
        for status, _, retry_after, body in log:
            if status == 503:
                assert retry_after is not None
                assert body["status"] == 503
        assert "unhandled error" not in node.log()  # no 500 was logged either
    acknowledged = {entry[1] for entry in log if entry[0] == 201}
    with psycopg.connect(url) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM messages")}
    assert acknowledged <= stored, sorted(acknowledged - stored)


async def _has(entries: list[Any], status: int) -> bool:
    return any(entry[0] == status for entry in entries)
