"""Prometheus metrics on CHAT_METRICS_ADDR from real servers: requests by route and status,
messages, events delivered, open streams by kind, SQLite group commits; summed over two
workers on PostgreSQL and Redis (multiprocess mode: pool, Redis state); never on the public
port."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families

from testinfra import procs
from testinfra.server import running_server
from tests.helpers import PASSWORD
from tests.realtime_helpers import SseReader, next_message, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    text = httpx.get(f"http://{address}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def signup(client: httpx.AsyncClient, name: str) -> tuple[int, dict[str, str]]:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    assert (await client.post("/api/v1/users/", json=body)).status_code == 201
    r = await client.post("/api/v1/auth/token/", json={"username": name, "password": PASSWORD})
    return r.json()["user"]["id"], {"Authorization": f"Bearer {r.json()['token']}"}


async def test_metrics_of_one_node(tmp_path: Path) -> None:
    address = f"127.0.0.1:{procs.free_port()}"
    env = {"CHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "CHAT_METRICS_ADDR": address}
    with running_server(tmp_path, env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            assert (await client.get("/metrics")).status_code == 404  # not on the public port
            assert (await client.get("/no/such/path/1")).status_code == 404
            await _streams_and_sends(client, server.ws_url, address)
        samples = await asyncio.to_thread(scrape, address)
    count = "chatserver_request_duration_seconds_count"
    assert value(samples, count, route="/api/v1/chats", method="POST", status="201") == 3
    assert value(samples, count, route="/api/v1/users", method="POST", status="201") == 2
    assert value(samples, count, route="unmatched", method="GET", status="404") == 2
    bucket = "chatserver_request_duration_seconds_bucket"
    assert (
        value(samples, bucket, route="/api/v1/chats", method="POST", status="201", le="+Inf") == 3
    )
    assert value(samples, "chatserver_messages_sent_total") == 3
    for transport in ("websocket", "sse", "longpoll"):
        assert value(samples, "chatserver_events_delivered_total", transport=transport) >= 1
    assert value(samples, "chatserver_sqlite_commit_batch_size_count") >= 3
    assert value(samples, "chatserver_sqlite_commit_seconds_count") >= 3
    assert ("chatserver_argon2_queue_depth", frozenset()) in samples
    assert value(samples, "chatserver_events_dropped_total", reason="overflow") == 0


async def _streams_and_sends(client: httpx.AsyncClient, ws_url: str, address: str) -> None:
    """Open a WebSocket, an SSE stream and a long-poll; the gauges count them; a message
    reaches all three."""
    jane_id, jane = await signup(client, "jane")
    _, john = await signup(client, "john")
    sse_headers = {**jane, "Accept": "text/event-stream"}
    current = (await client.get("/api/v1/events", headers=jane)).json()["next"]
    async with (
        websockets.connect(f"{ws_url}/api/v1/stream?since=0", additional_headers=jane) as ws,
        client.stream("GET", "/api/v1/stream?since=0", headers=sse_headers) as sse,
    ):
        poll = asyncio.create_task(
            client.get("/api/v1/events", params={"since": current, "wait": 10}, headers=jane)
        )

        async def all_open() -> bool:
            samples = await asyncio.to_thread(scrape, address)
            kinds = ("websocket", "sse", "longpoll")
            return all(value(samples, "chatserver_open_streams", kind=k) == 1 for k in kinds)

        await wait_until(all_open, within=10, what="three open streams counted")
        for text in ("one", "two", "three"):
            sent = await client.post(
                "/api/v1/chats/", json={"user_id": jane_id, "message": text}, headers=john
            )
            assert sent.status_code == 201
        assert (await next_message(ws))["message"] == "one"
        assert (await SseReader(sse).message())[1]["message"] == "one"
        assert json.loads((await poll).text)["events"]


async def test_metrics_summed_over_two_workers_on_postgres_and_redis(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    address = f"127.0.0.1:{procs.free_port()}"
    env = {
        "CHAT_DATABASE_URL": postgres_url,
        "CHAT_REDIS_URL": redis_url,
        "CHAT_WORKERS": "2",
        "CHAT_METRICS_ADDR": address,
    }
    with running_server(tmp_path, env) as server:
        for n in range(6):  # a new connection each: the workers share them out
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
                await signup(client, f"user{n}")

        async def sampled() -> bool:  # the gauges are sampled once a second
            samples = await asyncio.to_thread(scrape, address)
            return value(samples, "chatserver_redis_up") == 1 and (
                value(samples, "chatserver_postgres_pool_connections", state="idle") > 0
            )

        await wait_until(sampled, within=10, what="pool and Redis gauges")
        samples = await asyncio.to_thread(scrape, address)
    count = "chatserver_request_duration_seconds_count"
    assert value(samples, count, route="/api/v1/users", method="POST", status="201") == 6
    assert value(samples, count, route="/api/v1/auth/token", method="POST", status="200") == 6
    assert value(samples, "chatserver_postgres_pool_wait_seconds_count") >= 12
    assert value(samples, "chatserver_argon2_queue_depth") == 0
