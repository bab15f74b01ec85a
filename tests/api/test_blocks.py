"""/api/v1/blocks/ and what a block does: sends refused with nothing stored, presence and
last_seen_at hidden from the blocked user, history kept; bad input as problem+json.

A real server (uvicorn in a thread, on a real socket) on each database; the tests read the
database directly to prove a refused send stored nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chatserver.config import Settings
from testinfra.postgres import PostgresServer
from tests.helpers import (
    TEST_LIMITS,
    Api,
    User,
    assert_401,
    assert_problem,
    assert_utc_timestamp,
    query_database,
)
from tests.realtime_helpers import LiveServer, ready_stream, serve_in_thread, user_json, wait_online


@dataclass
class Node:
    live: LiveServer
    database_url: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('blocks') / 'chat.db'}"
        with serve_in_thread(Settings(database_url=url, **TEST_LIMITS)) as live:
            yield Node(live, url)
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    name = postgres.create_database()
    try:
        with serve_in_thread(Settings(database_url=postgres.url(name), **TEST_LIMITS)) as live:
            yield Node(live, postgres.url(name))
    finally:
        postgres.drop_database(name)


@pytest.fixture
async def api(node: Node) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=node.live.base_url, timeout=30) as client:
        yield Api(client)


@pytest.fixture
async def users(api: Api) -> list[User]:
    """alice, bob, carol (signed up concurrently: hashing dominates the set-up)."""
    return list(await asyncio.gather(api.signup(), api.signup(), api.signup()))


async def block(api: Api, blocker: User, user_id: int) -> httpx.Response:
    return await api.client.put(f"/api/v1/blocks/{user_id}", headers=blocker.auth)


async def unblock(api: Api, blocker: User, user_id: int) -> httpx.Response:
    return await api.client.delete(f"/api/v1/blocks/{user_id}", headers=blocker.auth)


async def blocks_of(api: Api, user: User) -> list[dict[str, Any]]:
    r = await api.client.get("/api/v1/blocks/", headers=user.auth)
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()["blocks"]
    return listed


def stored_between(node: Node, sender: User, recipient: User) -> int:
    rows = query_database(
        node.database_url,
        "SELECT count(*) FROM messages"
        f" WHERE sender_id = {sender.id} AND recipient_id = {recipient.id}",
    )
    return int(rows[0][0])


async def test_block_is_idempotent_listed_and_undone(api: Api, users: list[User]) -> None:
    alice, bob, carol = users
    assert await blocks_of(api, alice) == []
    assert (await block(api, alice, bob.id)).status_code == 204
    first = await blocks_of(api, alice)
    assert [b["user_id"] for b in first] == [bob.id]
    assert_utc_timestamp(first[0]["since"])

    assert (await block(api, alice, bob.id)).status_code == 204  # again: nothing changes
    assert await blocks_of(api, alice) == first
    assert (await block(api, alice, carol.id)).status_code == 204
    assert [b["user_id"] for b in await blocks_of(api, alice)] == [carol.id, bob.id]
    assert await blocks_of(api, bob) == []  # only the blocker's list

    assert (await unblock(api, alice, bob.id)).status_code == 204
    assert (await unblock(api, alice, bob.id)).status_code == 204  # not blocked: still 204
    assert [b["user_id"] for b in await blocks_of(api, alice)] == [carol.id]


async def test_a_blocked_users_send_is_403_and_stores_nothing(
    node: Node, api: Api, users: list[User]
) -> None:
    alice, bob, _ = users
    before = await api.send(bob, alice.id, "before the block")
    await api.send(alice, bob.id, "reply")
    assert (await block(api, alice, bob.id)).status_code == 204

    r = await api.client.post(
        "/api/v1/chats/",
        json={"user_id": alice.id, "message": "after the block"},
        headers={**bob.auth, "Idempotency-Key": "blocked-1"},
    )
    problem = assert_problem(r, 403)
    assert problem["detail"] == "You cannot send messages to this user"
    assert stored_between(node, bob, alice) == 1
    # A's history with B stays, for both; the blocker may still write.
    assert [m["id"] for m in (await api.inbox(alice, **{"with": bob.id}))["messages"]][-1] == (
        before["id"]
    )
    assert (await api.inbox(bob, **{"with": alice.id}))["meta"]["count"] == 2
    await api.send(alice, bob.id, "the blocker can still write")

    assert (await unblock(api, alice, bob.id)).status_code == 204
    again = await api.send(bob, alice.id, "after the unblock")
    assert again["sent_by"] == bob.id
    assert stored_between(node, bob, alice) == 2


async def test_the_blocker_shows_offline_and_unseen_to_the_blocked_only(
    node: Node, api: Api, users: list[User]
) -> None:
    alice, bob, carol = users
    await api.send(bob, alice.id, "hi")
    await api.send(carol, alice.id, "hi")
    assert (await block(api, alice, bob.id)).status_code == 204
    async with ready_stream(api, node.live.ws_url, alice, carol):
        await wait_online(api, carol, alice.id, True)
        seen_by_carol = await user_json(api, carol, alice.id)
        assert_utc_timestamp(seen_by_carol["last_seen_at"])

        seen_by_bob = await user_json(api, bob, alice.id)
        assert (seen_by_bob["online"], seen_by_bob["last_seen_at"]) == (False, None)
        r = await api.get(f"/api/v1/conversations/{alice.id}/", bob)
        assert r.status_code == 200, r.text
        assert (r.json()["user"]["online"], r.json()["user"]["last_seen_at"]) == (False, None)
        listed = (await api.get("/api/v1/conversations/", bob)).json()["conversations"]
        shown = {c["user_id"]: c["user"] for c in listed}
        assert (shown[alice.id]["online"], shown[alice.id]["last_seen_at"]) == (False, None)
        # The blocker still sees the blocked user as everyone does.
        await api.inbox(bob)  # a fetch sets last_seen_at
        assert (await user_json(api, alice, bob.id))["last_seen_at"] is not None

        assert (await unblock(api, alice, bob.id)).status_code == 204
        await wait_online(api, bob, alice.id, True)
        assert_utc_timestamp((await user_json(api, bob, alice.id))["last_seen_at"])


async def test_bad_block_requests_are_problems(api: Api, users: list[User]) -> None:
    alice, _, _ = users
    for method in ("PUT", "DELETE"):
        r = await api.client.request(method, f"/api/v1/blocks/{alice.id}", headers=alice.auth)
        assert_problem(r, 400, "user_id")
        r = await api.client.request(method, "/api/v1/blocks/999999999", headers=alice.auth)
        assert_problem(r, 404)
        r = await api.client.request(method, "/api/v1/blocks/0", headers=alice.auth)
        assert_problem(r, 400, "user_id")
        r = await api.client.request(method, f"/api/v1/blocks/{2**63}", headers=alice.auth)
        assert r.status_code in (400, 404), r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert_401(await api.client.request(method, f"/api/v1/blocks/{alice.id}"))
    assert_401(await api.client.get("/api/v1/blocks/"))
    assert await blocks_of(api, alice) == []


async def test_deleting_either_account_removes_the_block(
    node: Node, api: Api, users: list[User]
) -> None:
    alice, bob, carol = users
    assert (await block(api, alice, bob.id)).status_code == 204
    assert (await block(api, carol, alice.id)).status_code == 204
    r = await api.client.delete("/api/v1/users/", headers=alice.auth)
    assert r.status_code == 204
    rows = query_database(
        node.database_url,
        f"SELECT count(*) FROM blocks WHERE blocker_id = {alice.id} OR blocked_id = {alice.id}",
    )
    assert rows == [(0,)]
    assert await blocks_of(api, carol) == []
