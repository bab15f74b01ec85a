"""Helpers of the edit, delete, reply and search tests: the public API over a real socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.api.conftest import Node
from tests.helpers import MESSAGE_FIELDS, Api, User

CHATS = "/api/v1/chats/"


@contextlib.asynccontextmanager
async def api_for(node: Node) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as client:
        yield Api(client)  # type: ignore[arg-type]


async def people(api: Api, count: int) -> list[User]:
    return [await api.signup() for _ in range(count)]


async def edit(api: Api, user: User, message_id: int | str, body: Any) -> httpx.Response:
    return await api.client.patch(f"{CHATS}{message_id}/", json=body, headers=user.auth)


async def edited(api: Api, user: User, message_id: int, text: str) -> dict[str, Any]:
    r = await edit(api, user, message_id, {"message": text})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == MESSAGE_FIELDS
    return body


async def delete(api: Api, user: User, message_id: int | str) -> httpx.Response:
    return await api.client.delete(f"{CHATS}{message_id}/", headers=user.auth)


async def deleted(api: Api, user: User, message_id: int) -> None:
    r = await delete(api, user, message_id)
    assert r.status_code == 204, r.text
    assert r.content == b""


async def post_send(api: Api, user: User, body: Any, **headers: str) -> httpx.Response:
    return await api.client.post(CHATS, json=body, headers={**user.auth, **headers})


async def search(api: Api, user: User, q: str, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = await api.inbox(user, q=q, **params)
    return page


async def events_of(api: Api, user: User, since: int = 0) -> list[dict[str, Any]]:
    r = await api.get("/api/v1/events", user, since=since, limit=500)
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


async def position(api: Api, user: User) -> int:
    r = await api.get("/api/v1/events", user)
    assert r.status_code == 200, r.text
    return int(r.json()["next"])


async def message_seen_by(api: Api, user: User, peer: User, message_id: int) -> dict[str, Any]:
    """The message as ``user`` reads it in the conversation with ``peer``."""
    page = await api.inbox(user, **{"with": peer.id, "page_size": 100})
    found = [m for m in page["messages"] if m["id"] == message_id]
    assert len(found) == 1, page
    message: dict[str, Any] = found[0]
    return message
