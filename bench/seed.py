"""Seed the server through its public API and describe the data for the wrk scripts."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec

from bench.server import ChatServer
from bench.ws import HttpConnection
from chatserver import auth, store
from chatserver.db import open_database
from chatserver.services import now_us
from testinfra.server import chatserver_command

PASSWORD = "bench-Pass-2024"
T = TypeVar("T")


class SeedError(RuntimeError):
    pass


@dataclass
class User:
    id: int
    username: str
    token: str


@dataclass
class BenchData:
    users: list[User]
    partners: list[list[int]]  # per user index: user ids they exchanged messages with
    after: list[int]  # per user index: an after_id a few messages before their latest
    message_ids: dict[int, list[int]] = field(default_factory=dict)  # user id -> message ids
    sent: dict[int, list[int]] = field(default_factory=dict)  # user id -> ids of those they sent
    page_bytes: int = 0  # size of a 10-message inbox page

    def write_lua(self, dest: Path, users: Sequence[User] | None = None, **extra: Any) -> Path:
        """A Lua file returning the table the wrk scripts read (``BENCH_DATA``)."""
        chosen = list(users) if users is not None else self.users
        index = {u.id: i for i, u in enumerate(self.users)}
        lines = ["return {"]
        lines.append(f"  password = {lua_str(PASSWORD)},")
        lines.append("  ids = {" + ",".join(str(u.id) for u in chosen) + "},")
        lines.append("  tokens = {" + ",".join(lua_str(u.token) for u in chosen) + "},")
        lines.append("  usernames = {" + ",".join(lua_str(u.username) for u in chosen) + "},")
        if users is None:
            lines.append("  after = {" + ",".join(str(a) for a in self.after) + "},")
            lines.append("  partners = {")
            lines.extend(
                "    {" + ",".join(str(p) for p in self.partners[index[u.id]]) + "},"
                for u in chosen
            )
            lines.append("  },")
            lines.append("  sent = {")
            lines.extend(
                "    {" + ",".join(str(m) for m in self.sent.get(u.id, ())) + "}," for u in chosen
            )
            lines.append("  },")
        for key, value in extra.items():
            lines.append(f"  {key} = {lua_str(value) if isinstance(value, str) else value},")
        lines.append("}")
        dest.write_text("\n".join(lines) + "\n")
        return dest


def lua_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


async def gather_limited(limit: int, factories: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    sem = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await factory()

    return list(await asyncio.gather(*(run(f) for f in factories)))


def client(server: ChatServer, connections: int = 32) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        timeout=60.0,
        # Idle connections are dropped after 2 s, before the server's 5 s keep-alive
        # timeout: at equal timeouts a request can go out on a connection the server is
        # closing at that moment (seen as a ReadError while seeding).
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=2.0,
        ),
    )


def check(resp: httpx.Response, expected: int, what: str) -> dict[str, Any]:
    if resp.status_code != expected:
        raise SeedError(f"{what}: expected {expected}, got {resp.status_code}: {resp.text[:300]}")
    body: dict[str, Any] = resp.json()
    return body


async def create_user(http: httpx.AsyncClient, username: str) -> User:
    body = check(
        await http.post(
            "/api/v1/users/",
            json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
        ),
        201,
        f"create user {username}",
    )
    token = await login(http, username)
    return User(id=int(body["id"]), username=username, token=token)


async def login(http: httpx.AsyncClient, username: str) -> str:
    body = check(
        await http.post("/api/v1/auth/token/", json={"username": username, "password": PASSWORD}),
        200,
        f"login {username}",
    )
    return str(body["token"])


async def send(http: httpx.AsyncClient, sender: User, recipient_id: int, text: str) -> int:
    body = check(
        await http.post(
            "/api/v1/chats/",
            json={"user_id": recipient_id, "message": text},
            headers={"Authorization": f"Bearer {sender.token}"},
        ),
        201,
        "send message",
    )
    return int(body["id"])


async def inbox(http: httpx.AsyncClient, user: User, query: str) -> httpx.Response:
    return await http.get(
        f"/api/v1/chats/?{query}", headers={"Authorization": f"Bearer {user.token}"}
    )


async def create_users(server: ChatServer, prefix: str, count: int) -> list[User]:
    async with client(server) as http:
        return await gather_limited(
            16,
            [partial(create_user, http, f"{prefix}{i:05d}") for i in range(count)],
        )


def partner_count(users: int, partners: int) -> int:
    """How many of the next users each user writes to (at least one, never itself)."""
    return max(1, min(partners, users - 1))


def shortest_conversation(users: int, messages_per_user: int, partners: int) -> int:
    """The fewest messages any seeded conversation holds (``seed`` writes round-robin)."""
    return messages_per_user // partner_count(users, partners)


async def seed(server: ChatServer, users: int, messages_per_user: int, partners: int) -> BenchData:
    """``users`` users, each sending ``messages_per_user`` messages to its next ``partners``."""
    t0 = time.monotonic()
    people = await create_users(server, "bench", users)
    print(f"  created {users} users in {time.monotonic() - t0:.1f}s", flush=True)
    n = len(people)
    k = partner_count(n, partners)
    partner_ids = [
        sorted({people[(i + d) % n].id for d in range(-k, k + 1) if d != 0}) for i in range(n)
    ]
    t1 = time.monotonic()
    message_ids: dict[int, list[int]] = {u.id: [] for u in people}
    sent: dict[int, list[int]] = {u.id: [] for u in people}
    async with client(server) as http:

        async def one(i: int, m: int) -> None:
            sender, recipient = people[i], people[(i + 1 + m % k) % n]
            mid = await send(http, sender, recipient.id, f"seed message {m} from {sender.username}")
            message_ids[sender.id].append(mid)
            message_ids[recipient.id].append(mid)
            sent[sender.id].append(mid)

        await gather_limited(
            32, [partial(one, i, m) for m in range(messages_per_user) for i in range(n)]
        )
        total = n * messages_per_user
        print(f"  sent {total} messages in {time.monotonic() - t1:.1f}s", flush=True)
        after = []
        for u in people:
            ids = sorted(message_ids[u.id])
            after.append(ids[-min(5, len(ids))] if ids else 0)
        page = await inbox(http, people[0], "page=1&page_size=10")
        check(page, 200, "inbox page 1")
    return BenchData(
        users=people,
        partners=partner_ids,
        after=after,
        message_ids=message_ids,
        sent=sent,
        page_bytes=len(page.content),
    )


async def sync_cursors(
    server: ChatServer, data: BenchData, behind: Sequence[int]
) -> list[list[int]]:
    """For each count in ``behind``, per user: an ``after_id`` with that many of their
    received messages newer than it (0 when they have fewer), read through the API."""
    deepest = max(behind) + 1

    async def newest_ids(http: httpx.AsyncClient, user: User) -> list[int]:
        page = check(await inbox(http, user, f"page_size={deepest}"), 200, "inbox")
        return [m["id"] for m in page["messages"]]

    async with client(server) as http:
        newest = await gather_limited(32, [partial(newest_ids, http, u) for u in data.users])
    return [[ids[n] if len(ids) > n else 0 for ids in newest] for n in behind]


def bulk_load(
    server: ChatServer, sender: int, recipient: int, count: int, last_sender: int | None = None
) -> float:
    """The server's documented bulk loader (from each user ``sender``…``last_sender``);
    returns seconds taken."""
    t0 = time.monotonic()
    many = [] if last_sender is None else ["--last-sender", str(last_sender)]
    out = subprocess.run(
        [
            *chatserver_command(),
            "bulk-load",
            "--sender",
            str(sender),
            "--recipient",
            str(recipient),
            "--count",
            str(count),
            *many,
        ],
        env=server.env,
        cwd=server.workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SeedError(
            f"`chatserver bulk-load --count {count}` failed (exit {out.returncode}): "
            f"{(out.stderr or out.stdout).strip()[-500:]}"
        )
    return time.monotonic() - t0


async def insert_users(database_url: str, prefix: str, count: int) -> list[int]:
    """``count`` users written straight to the database with chatserver's own store
    functions, in one transaction: people to talk to, who never log in. Through the API
    each would cost an argon2 hash, minutes for 10,000; here they share one."""
    password_hash = await auth.hash_password(PASSWORD)
    db = await open_database(database_url)
    ids: list[int] = []
    try:
        async with db.transaction() as conn:
            now = now_us()
            for i in range(count):
                name = f"{prefix}{i:05d}"
                email = f"{name}@example.com"
                keys = (name.casefold(), email.casefold())
                user = await store.insert_user(conn, name, email, password_hash, keys, now)
                ids.append(user.id)
    finally:
        await db.close()
    return ids


async def send_each(
    server: ChatServer, sender: User, recipient_ids: Sequence[int], text: str
) -> list[int]:
    """One message from ``sender`` to each recipient through the API (so every conversation
    row, counter and event is written as in real traffic); the message ids, in order.

    With the sender's bare keep-alive connections: httpx spent more CPU per request than
    the server did, and 10,000 sends took minutes."""
    parts = urlsplit(server.base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    ids = [0] * len(recipient_ids)
    todo = list(enumerate(recipient_ids))

    async def worker() -> None:
        conn = HttpConnection(host, port)
        try:
            while todo:
                i, rid = todo.pop()
                body = msgspec.json.encode({"user_id": rid, "message": f"{text} {i}"})
                status, payload = await conn.post_json("/api/v1/chats/", body, sender.token)
                if status != 201:
                    raise SeedError(f"send message: expected 201, got {status}: {payload[:300]!r}")
                ids[i] = int(msgspec.json.decode(payload)["id"])
        finally:
            if conn.writer is not None:
                conn.writer.close()

    await asyncio.gather(*(worker() for _ in range(32)))
    return ids


async def event_position(http: httpx.AsyncClient, user: User) -> int:
    """The position of the user's latest event (``GET /api/v1/events`` without ``since``)."""
    body = check(
        await http.get("/api/v1/events", headers={"Authorization": f"Bearer {user.token}"}),
        200,
        "events",
    )
    return int(body["next"])


async def event_positions(server: ChatServer, users: Sequence[User]) -> list[int]:
    async with client(server) as http:
        return await gather_limited(32, [partial(event_position, http, u) for u in users])
