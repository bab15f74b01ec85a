"""presence.py's transitions, in one process and in a real Redis: a change is reported
once (the first stream, the check after the last one closed), a reconnect meanwhile cancels
it, and users whose node died are found by their entries' expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chatserver.presence import EXPIRY_KEY, LocalPresence, Presence, RedisPresence, presence_key

ALICE, BOB = 1, 2


@pytest.fixture(params=["local", "redis"])
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[Presence]:
    if request.param == "local":
        yield LocalPresence()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisPresence(client)
    finally:
        await client.aclose()


async def test_online_once_offline_once_and_a_reconnect_cancels_it(presence: Presence) -> None:
    assert await presence.connected(ALICE, "s1") is True  # announce online
    assert await presence.connected(ALICE, "s2") is False  # already online
    assert await presence.disconnected(ALICE, "s1") is False  # one left
    assert await presence.went_offline(ALICE) is False
    assert await presence.disconnected(ALICE, "s2") is True  # none left: check later
    assert await presence.connected(ALICE, "s3") is False  # back within the grace period
    assert await presence.went_offline(ALICE) is False  # so the check finds her online
    assert await presence.disconnected(ALICE, "s3") is True
    assert await presence.went_offline(ALICE) is True  # announce offline, once
    assert await presence.went_offline(ALICE) is False
    assert await presence.connected(ALICE, "s4") is True  # a new session is news again
    assert await presence.online(ALICE) is True
    assert await presence.online(BOB) is False
    assert await presence.expired() == []


async def test_users_whose_entries_expired_are_found_and_announced_once(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        presence = RedisPresence(client)
        await presence.connected(ALICE, "on-a-dead-node")
        await presence.connected(BOB, "alive")
        # Alice's node died: nothing refreshed her entry, which is now past its expiry.
        past = time.time() - 1
        await client.zadd(presence_key(ALICE), {"on-a-dead-node": past})
        await client.zadd(EXPIRY_KEY, {str(ALICE): past})

        assert await presence.expired() == [ALICE]
        assert await presence.online(ALICE) is False
        assert await presence.went_offline(ALICE) is True
        assert await presence.expired() == []  # found once
        assert await presence.went_offline(ALICE) is False
        assert await presence.online(BOB) is True
    finally:
        await client.aclose()
