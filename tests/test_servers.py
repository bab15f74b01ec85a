"""Smoke tests for tests/servers.py: the fixtures must yield servers that really work."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis


async def test_postgres_url_is_a_fresh_writable_database(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("select 1") == 1
        # Fresh database: no user tables yet.
        tables = await conn.fetchval(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        )
        assert tables == 0
        await conn.execute("create table t (id serial primary key, body text not null)")
        await conn.execute("insert into t (body) values ($1)", "hello")
        assert await conn.fetchval("select body from t") == "hello"
    finally:
        await conn.close()


async def test_postgres_url_requires_the_password(postgres_url: str) -> None:
    """TCP auth is real, so code that drops the password from the URL fails loudly."""
    without_password = postgres_url.replace(":postgres@", "@", 1)
    try:
        conn = await asyncpg.connect(without_password)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return
    await conn.close()
    raise AssertionError("connected without a password")


async def test_redis_set_get_and_publish(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = client.pubsub()
    try:
        assert await client.dbsize() == 0  # flushed before the test
        await client.set("greeting", "hello")
        assert await client.get("greeting") == "hello"

        await pubsub.subscribe("room")
        assert await client.publish("room", "hi") == 1
        message = await asyncio.wait_for(_next_message(pubsub), timeout=5)
        assert message == "hi"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        await client.aclose()


async def _next_message(pubsub: aioredis.client.PubSub) -> str:
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            return str(message["data"])
