"""Test helpers that only go through the public HTTP API."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

PASSWORD = "correct horse battery"
_names = itertools.count(1)


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
