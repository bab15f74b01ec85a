"""The real-time stream (/api/v1/stream over WebSocket and SSE), long-poll and presence.

The app runs in this process (`serve_in_thread`: uvicorn on a real socket, one server per
module and database), so settings such as ``stream_queue_size`` can be set directly, and
socket buffers give real backpressure. Every wait is bounded and waits for a frame or an
event, never for time to pass.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from chatserver.config import Settings
from tests.helpers import Api, User, assert_problem, assert_utc_timestamp
from tests.realtime_helpers import (
    CLOSE_AUTH,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    LiveServer,
    message_events,
    message_ids,
    next_event,
    next_message,
    open_sse,
    open_stream,
    read_until_closed,
    ready_stream,
    refused,
    serve_in_thread,
    user_json,
    wait_online,
    wait_until,
)

MAX_FRAME = 64 * 1024

# ------------------------------------------------------------------ fixtures

# Several tests send hundreds of messages (resume, replay pages, concurrent senders):
# this module's servers run with the rate limits off (tests/api/test_limits.py tests them).
pytestmark = pytest.mark.bulk


@pytest.fixture
async def api(server: LiveServer) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield Api(client)


@pytest.fixture
async def pair(api: Api) -> tuple[User, User]:
    """Two new users (signed up concurrently: password hashing dominates set-up time)."""
    first, second = await asyncio.gather(api.signup(), api.signup())
    return first, second


@pytest.fixture
def alice(pair: tuple[User, User]) -> User:
    return pair[0]


@pytest.fixture
def bob(pair: tuple[User, User]) -> User:
    return pair[1]


@pytest.fixture(scope="module")
def warmer(server: LiveServer) -> User:
    """Sends the warm-up messages that prove a stream is live (see `ready_stream`); one
    per server, as nothing ever listens to its own streams."""

    async def signup() -> User:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            return await Api(client).signup()

    return asyncio.run(signup())


async def send_many(api: Api, sender: User, to: int, count: int, batch: int = 25) -> list[int]:
    """Send ``count`` messages, ``batch`` at a time concurrently; return their ids sorted."""
    ids: list[int] = []
    for start in range(0, count, batch):
        sends = [api.send(sender, to, f"m{i}") for i in range(start, min(count, start + batch))]
        ids += [m["id"] for m in await asyncio.gather(*sends)]
    return sorted(ids)


# ------------------------------------------------------------------ live delivery


async def test_websocket_bearer_delivers_to_recipient_and_senders_other_stream(
    server: LiveServer, api: Api, alice: User, bob: User, warmer: User
) -> None:
    async with (
        ready_stream(api, server.ws_url, alice, warmer) as alice_ws,
        ready_stream(api, server.ws_url, bob, warmer) as bob_ws,
    ):
        sent = await api.send(bob, alice.id, "hello alice")
        # The same message object as the REST API returned, to both sides, each at their
        # own next position (each one's warm-up was their first event).
        assert await next_event(alice_ws) == {"type": "message", "pos": 2, "message": sent}
        assert await next_event(bob_ws) == {"type": "message", "pos": 2, "message": sent}


async def test_websocket_auth_frame_delivers_live_messages(
    server: LiveServer, api: Api, alice: User, bob: User
) -> None:
    async with open_stream(server.ws_url, alice.token, auth_frame=True) as ws:
        # Online once its start position is read: what is sent from now on is after it.
        await wait_online(api, bob, alice.id, True)
        first = await api.send(bob, alice.id, "one")
        assert await next_message(ws) == first
        second = await api.send(alice, bob.id, "two")  # alice's own message, too
        assert await next_message(ws) == second


async def test_received_event_reaches_sender_when_recipient_fetches(
    server: LiveServer, api: Api, alice: User, bob: User, warmer: User
) -> None:
    async with ready_stream(api, server.ws_url, bob, warmer) as bob_ws:
        sent = await api.send(bob, alice.id, "did you get this?")
        assert (await next_message(bob_ws))["id"] == sent["id"]
        page = await api.inbox(alice)
        [fetched] = [m for m in page["messages"] if m["id"] == sent["id"]]
        event = await next_event(bob_ws)
        assert event == {
            "type": "received",
            "pos": 3,  # after the warm-up and his own message
            "message_ids": [sent["id"]],
            "by": alice.id,
            "at": fetched["received_at"],
        }
        assert_utc_timestamp(event["at"])


# ------------------------------------------------------------------ Server-Sent Events


async def test_sse_delivers_live_messages_with_their_position_as_event_id(
    api: Api, alice: User, bob: User, warmer: User
) -> None:
    warm = await api.send(warmer, alice.id, "warm-up")  # alice's position 1
    async with open_sse(api.client, alice, after_id=warm["id"] - 1) as sse:
        assert await sse.message() == ("1", warm)  # live from here on
        sent = await api.send(bob, alice.id, "over SSE")
        event = await sse.next()
        assert event.id == "2"
        assert event.json() == {"type": "message", "pos": 2, "message": sent}
        own = await api.send(alice, bob.id, "mine")
        assert await sse.message() == ("3", own)
        await api.inbox(bob)  # bob fetches alice's message: a received event, id 4
        received = await sse.next()
        assert (received.id, received.json()["type"], received.json()["pos"]) == (
            "4",
            "received",
            4,
        )


@pytest.mark.parametrize("resume", ["last-event-id", "since", "after_id"])
async def test_sse_resumes_after_a_cursor_then_goes_live(
    api: Api, alice: User, bob: User, resume: str
) -> None:
    sent = [await api.send(bob, alice.id, f"m{i}") for i in range(4)]  # positions 1..4
    cursors: dict[str, dict[str, Any]] = {
        "last-event-id": {"headers": {"Last-Event-ID": "2"}},  # a position
        "since": {"since": 2},
        "after_id": {"after_id": sent[1]["id"]},  # a message id: its position, 2
    }
    kwargs = cursors[resume]
    async with open_sse(api.client, alice, **kwargs) as sse:
        assert [await sse.message() for _ in range(2)] == [("3", sent[2]), ("4", sent[3])]
        live = await api.send(bob, alice.id, "live")
        assert await sse.message() == ("5", live)  # nothing repeated in between


async def test_sse_last_event_id_resumes_every_kind_of_event_by_position(
    api: Api, alice: User, bob: User
) -> None:
    """What EventSource does by itself: reconnect with the last id it saw. The events missed
    meanwhile (a read mark, a receipt, a message) come back in order, then live ones."""
    to_bob = await api.send(alice, bob.id, "read me")  # alice 1
    async with open_sse(api.client, alice, since=0) as sse:
        first = await sse.next()
    assert (first.id, first.json()["message"]) == ("1", to_bob)
    await api.inbox(bob)  # alice 2: received
    r = await api.client.post(
        f"/api/v1/conversations/{alice.id}/read", json={"up_to_id": to_bob["id"]}, headers=bob.auth
    )
    assert r.status_code == 200, r.text  # alice 3: read
    back = await api.send(bob, alice.id, "back")  # alice 4
    # Last-Event-ID wins over a query cursor (the page's URL keeps its first after_id).
    resume = {"headers": {"Last-Event-ID": first.id}, "after_id": back["id"]}
    async with open_sse(api.client, alice, **resume) as sse:
        missed = [await sse.next() for _ in range(3)]
        live = await api.send(bob, alice.id, "live")
        assert await sse.message() == ("5", live)
    assert [(e.id, e.json()["type"], e.json()["pos"]) for e in missed] == [
        ("2", "received", 2),
        ("3", "read", 3),
        ("4", "message", 4),
    ]
    assert missed[1].json()["by"] == bob.id
    assert missed[2].json()["message"] == back


async def test_sse_from_a_position_not_reached_starts_with_a_reset(
    api: Api, alice: User, bob: User
) -> None:
    await api.send(bob, alice.id, "one")
    async with open_sse(api.client, alice, headers={"Last-Event-ID": "40"}) as sse:
        reset = await sse.next()
        assert (reset.id, reset.json()) == ("1", {"type": "reset", "pos": 1})
        live = await api.send(bob, alice.id, "live")
        assert await sse.message() == ("2", live)


async def test_sse_refuses_a_bad_token(api: Api) -> None:
    r = await api.client.get(
        "/api/v1/stream",
        headers={"Accept": "text/event-stream", "Authorization": "Bearer not-a-token"},
    )
    assert_problem(r, 401)


# ------------------------------------------------------------------ resume


async def test_websocket_resume_replays_missed_messages_oldest_first_then_live(
    server: LiveServer, api: Api, alice: User, bob: User, warmer: User
) -> None:
    async with ready_stream(api, server.ws_url, alice, warmer) as ws:
        seen = await api.send(bob, alice.id, "seen")
        assert (await next_message(ws))["id"] == seen["id"]
    missed = [(await api.send(bob, alice.id, f"missed {i}"))["id"] for i in range(5)]
    missed.append((await api.send(alice, bob.id, "from another device"))["id"])
    async with open_stream(server.ws_url, alice.token, after_id=seen["id"]) as ws:
        assert await message_ids(ws, len(missed)) == missed
        live = [(await api.send(bob, alice.id, f"live {i}"))["id"] for i in range(2)]
        assert await message_ids(ws, 2) == live  # no duplicate at the boundary


async def test_websocket_resume_with_since_replays_every_event_after_the_position(
    server: LiveServer, api: Api, alice: User, bob: User
) -> None:
    sent = [(await api.send(bob, alice.id, f"m{i}"))["id"] for i in range(3)]  # 1..3
    own = await api.send(alice, bob.id, "mine")  # 4
    async with open_stream(server.ws_url, alice.token, since=1) as ws:
        replayed = [await next_event(ws) for _ in range(3)]
        live = await api.send(bob, alice.id, "live")
        assert await next_event(ws) == {"type": "message", "pos": 5, "message": live}
    assert [(e["pos"], e["message"]["id"]) for e in replayed] == [
        (2, sent[1]),
        (3, sent[2]),
        (4, own["id"]),
    ]


async def test_websocket_resume_with_since_in_the_auth_frame(
    server: LiveServer, api: Api, alice: User, bob: User
) -> None:
    sent = [(await api.send(bob, alice.id, f"m{i}"))["id"] for i in range(3)]
    # The frame's cursor wins over the query's.
    async with open_stream(
        server.ws_url, alice.token, after_id=sent[-1], auth_frame=True, frame_since=1
    ) as ws:
        events = await message_events(ws, 2)
        assert [(e["pos"], e["message"]["id"]) for e in events] == [(2, sent[1]), (3, sent[2])]


async def test_websocket_from_a_position_not_reached_starts_with_a_reset(
    server: LiveServer, api: Api, alice: User, bob: User
) -> None:
    await api.send(bob, alice.id, "one")
    async with open_stream(server.ws_url, alice.token, since=1000) as ws:
        assert await next_event(ws) == {"type": "reset", "pos": 1}
        live = await api.send(bob, alice.id, "live")
        assert await next_event(ws) == {"type": "message", "pos": 2, "message": live}


async def test_websocket_resume_with_after_id_in_the_auth_frame(
    server: LiveServer, api: Api, alice: User, bob: User
) -> None:
    sent = [(await api.send(bob, alice.id, f"m{i}"))["id"] for i in range(4)]
    async with open_stream(
        server.ws_url, alice.token, auth_frame=True, frame_after_id=sent[0]
    ) as ws:
        assert await message_ids(ws, 3) == sent[1:]
        live = await api.send(bob, alice.id, "live")
        assert await message_ids(ws, 1) == [live["id"]]


async def test_resume_is_exact_while_messages_keep_arriving_during_the_replay(
    server: LiveServer, api: Api, alice: User, bob: User
) -> None:
    # More than one replay page (500), so the replay takes several database reads.
    history = await send_many(api, bob, alice.id, 520)
    total = len(history) + 60

    async def keep_sending() -> list[int]:
        return [(await api.send(bob, alice.id, f"during {i}"))["id"] for i in range(60)]

    async with open_stream(server.ws_url, alice.token, after_id=history[0] - 1) as ws:
        sender = asyncio.create_task(keep_sending())
        received = await message_ids(ws, total, within=30)
        during = await sender
        # A final marker: had anything been delivered twice, it would come before it.
        marker = await api.send(bob, alice.id, "marker")
        assert await message_ids(ws, 1) == [marker["id"]]
    assert received == history + during  # oldest first, every id once, no gap


async def test_many_concurrent_senders_on_postgresql_no_gap_no_duplicate(
    postgres_server_app: LiveServer,
) -> None:
    """8 senders x 25 messages to one recipient: ids are taken in one order and committed
    in another; streams opened before, during and after must each see every id once."""
    server = postgres_server_app
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        api = Api(client)
        alice, warmer, *senders = await asyncio.gather(*(api.signup() for _ in range(10)))
        async with ready_stream(api, server.ws_url, alice, warmer) as before:
            warm = (await api.inbox(alice))["messages"][0]["id"]

            async def sender(user: User) -> list[int]:
                return [(await api.send(user, alice.id, f"{i}"))["id"] for i in range(25)]

            sending = asyncio.gather(*(sender(user) for user in senders))
            # A stream opened while the senders are busy, resuming from before them all.
            async with open_stream(server.ws_url, alice.token, after_id=warm) as during:
                sent = sorted(itertools.chain.from_iterable(await sending))
                assert await message_ids(during, 200, within=30) == sent
            # Live, too, in id order: a client resuming from the highest id it has seen
            # must not skip one that was overtaken. Positions are dense and in the same
            # order: the warm-up was alice's position 1.
            live = await message_events(before, 200, within=30)
            assert [e["message"]["id"] for e in live] == sent
            assert [e["pos"] for e in live] == list(range(2, 202))
            marker = await api.send(warmer, alice.id, "marker")
            assert await message_ids(before, 1) == [marker["id"]]  # nothing twice

        middle = sent[99]
        async with open_stream(server.ws_url, alice.token, after_id=middle) as after:
            replayed = await message_ids(after, 101, within=30)
        assert replayed == [*sent[100:], marker["id"]]  # ascending, each once
        async with open_stream(server.ws_url, alice.token, since=101) as after:
            by_position = await message_events(after, 101, within=30)
        assert [e["message"]["id"] for e in by_position] == [*sent[100:], marker["id"]]


# ------------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    ("header", "first_frame"),
    [
        (None, {"type": "auth"}),
        (None, {"type": "auth", "token": ""}),
        (None, {"type": "auth", "token": "not-a-token"}),
        (None, {"type": "hello"}),
        (None, "not json"),
        (None, b'{"type": "auth", "token": "not-a-token"}'),
        ("Bearer not-a-token", None),
        ("Bearer ", None),
        ("Basic eDp5", None),
    ],
    ids=[
        "frame without token",
        "frame with empty token",
        "frame with bad token",
        "not an auth frame",
        "not json",
        "binary frame",
        "bad bearer",
        "empty bearer",
        "bad basic",
    ],
)
async def test_bad_or_missing_credentials_close_with_4401_and_send_nothing(
    server: LiveServer, header: str | None, first_frame: dict[str, str] | str | bytes | None
) -> None:
    headers = {"Authorization": header} if header else {}
    try:
        async with websockets.connect(
            f"{server.ws_url}/api/v1/stream", additional_headers=headers
        ) as ws:
            if isinstance(first_frame, dict):
                await ws.send(json.dumps(first_frame))
            elif first_frame is not None:
                await ws.send(first_frame)
            result = await read_until_closed(ws)
    except websockets.InvalidStatus as exc:  # the spec also allows refusing the upgrade
        result = (exc.response.status_code, [])
    assert result in ((CLOSE_AUTH, []), (401, []))


async def test_no_auth_frame_within_5_seconds_closes_with_4401(sqlite_server: LiveServer) -> None:
    async with open_stream(sqlite_server.ws_url) as ws:  # no header, no frame: just wait
        assert await read_until_closed(ws, within=10) == (CLOSE_AUTH, [])


async def test_revoking_a_token_closes_that_tokens_sockets_only(
    server: LiveServer, api: Api, alice: User, bob: User, warmer: User
) -> None:
    other_token = await api.login(alice.username)
    async with (
        ready_stream(api, server.ws_url, alice, warmer) as revoked_ws,
        ready_stream(api, server.ws_url, alice, warmer, token=other_token) as kept_ws,
    ):
        await next_message(revoked_ws)  # the second warm-up reaches both sockets
        r = await api.client.delete("/api/v1/auth/token/", headers=alice.auth)
        assert r.status_code == 204
        code, frames = await read_until_closed(revoked_ws, within=1.0)
        assert (code, frames) == (CLOSE_AUTH, [])
        sent = await api.send(bob, alice.id, "still here")
        assert await next_message(kept_ws) == sent
    assert await refused(server.ws_url, token=alice.token) in ((CLOSE_AUTH, []), (401, []))


async def test_revoking_a_token_ends_its_sse_stream(api: Api, alice: User, warmer: User) -> None:
    warm = await api.send(warmer, alice.id, "warm-up")
    async with open_sse(api.client, alice, after_id=warm["id"] - 1) as sse:
        await sse.message()
        r = await api.client.delete("/api/v1/auth/token/", headers=alice.auth)
        assert r.status_code == 204
        with pytest.raises(EOFError):
            await sse.next(within=1.0)


async def test_deleting_the_user_closes_all_their_sockets(
    server: LiveServer, api: Api, alice: User, warmer: User
) -> None:
    other_token = await api.login(alice.username)
    async with (
        ready_stream(api, server.ws_url, alice, warmer) as first,
        ready_stream(api, server.ws_url, alice, warmer, token=other_token) as second,
    ):
        r = await api.client.delete("/api/v1/users/", headers=alice.auth)
        assert r.status_code == 204
        for ws in (first, second):
            code, frames = await read_until_closed(ws, within=1.0)
            assert code == CLOSE_AUTH
            assert all(json.loads(f)["type"] == "message" for f in frames)  # no error events


# ------------------------------------------------------------------ client frames


async def test_malformed_frames_get_error_events_and_the_socket_stays_open(
    server: LiveServer, api: Api, alice: User, bob: User, warmer: User
) -> None:
    async with ready_stream(api, server.ws_url, alice, warmer) as ws:
        for frame in ("not json", '{"type": "typing"}', b"\x00\xff", "x" * MAX_FRAME):
            await ws.send(frame)
            event = await next_event(ws)
            assert event["type"] == "error"
            assert event["code"]
            assert event["detail"]
        sent = await api.send(bob, alice.id, "still open")
        assert await next_event(ws) == {"type": "message", "pos": 2, "message": sent}


async def test_a_frame_over_64_kib_closes_with_1009(
    server: LiveServer, api: Api, alice: User, warmer: User
) -> None:
    async with ready_stream(api, server.ws_url, alice, warmer) as ws:
        await ws.send("x" * (MAX_FRAME + 1))
        assert await read_until_closed(ws) == (CLOSE_TOO_BIG, [])


# ------------------------------------------------------------------ slow readers


@pytest.fixture(scope="module")
def tiny_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Queues of 5 events per stream, and a 4 KiB socket send buffer, so that a client
    that stops reading fills every buffer on the way after a few dozen messages."""
    path: Path = tmp_path_factory.mktemp("slow") / "chat.db"
    settings = Settings(database_url=f"sqlite:///{path}", stream_queue_size=5)
    with serve_in_thread(settings, send_buffer=4096) as server:
        yield server


async def test_a_reader_too_slow_is_disconnected_with_1013_and_can_resume(
    tiny_queue_server: LiveServer,
) -> None:
    server = tiny_queue_server
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        api = Api(client)
        alice, bob, warmer = await asyncio.gather(api.signup(), api.signup(), api.signup())
        # A client that stops reading: a 4 KiB receive window, websockets stops reading
        # from the socket as soon as one frame waits unread, and no compression (which
        # would shrink the messages below to almost nothing).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        async with ready_stream(
            api, server.ws_url, alice, warmer, sock=sock, max_queue=1, compression=None
        ) as ws:
            sent: list[int] = []
            text = secrets.token_hex(4000)  # 8,000 characters
            # The server must give up on this reader; bounded at 400 messages (~3 MB).
            while not sent or (await user_json(api, bob, alice.id))["online"]:
                assert len(sent) < 400, "the slow reader was never disconnected"
                sent += [(await api.send(bob, alice.id, text))["id"] for _ in range(5)]
            code, frames = await read_until_closed(ws, within=30)
        assert code == CLOSE_TRY_AGAIN
        delivered = [json.loads(f)["message"]["id"] for f in frames]
        assert delivered == sent[: len(delivered)]  # a prefix, in order: resumable
        assert len(delivered) < len(sent)
        async with open_stream(server.ws_url, alice.token, after_id=delivered[-1]) as again:
            rest = await message_ids(again, len(sent) - len(delivered), within=30)
        assert delivered + rest == sent


# ------------------------------------------------------------------ long-poll


async def test_long_poll_answers_as_soon_as_a_message_arrives(
    api: Api, alice: User, bob: User
) -> None:
    first = await api.send(bob, alice.id, "first")
    poll = asyncio.create_task(api.inbox(alice, after_id=first["id"], wait=10))
    done, _ = await asyncio.wait({poll}, timeout=0.3)
    assert not done, "nothing newer exists: the request must be held"
    sent = await api.send(bob, alice.id, "second")
    page = await asyncio.wait_for(poll, timeout=15)
    # Had the request only ended at its 10 s deadline, it would hold the empty page it read
    # before the message was sent: the message in it shows it was answered on arrival.
    assert [m["id"] for m in page["messages"]] == [sent["id"]]


async def test_long_poll_answers_at_once_when_newer_messages_exist(
    api: Api, alice: User, bob: User
) -> None:
    first = await api.send(bob, alice.id, "first")
    second = await api.send(bob, alice.id, "second")
    page = await asyncio.wait_for(api.inbox(alice, after_id=first["id"], wait=30), timeout=10)
    assert [m["id"] for m in page["messages"]] == [second["id"]]


async def test_long_poll_returns_an_empty_list_when_the_wait_ends(
    api: Api, alice: User, bob: User
) -> None:
    first = await api.send(bob, alice.id, "first")
    page = await api.inbox(alice, after_id=first["id"], wait=1)
    assert page["messages"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"wait": 5}, "wait"), ({"after_id": 0, "wait": 31}, "wait")],
    ids=["wait without after_id", "wait over 30"],
)
async def test_long_poll_bad_parameters_are_400(
    api: Api, alice: User, params: dict[str, Any], field: str
) -> None:
    r = await api.client.get("/api/v1/chats/", params=params, headers=alice.auth)
    body = assert_problem(r, 400)
    assert field in json.dumps(body)


# ------------------------------------------------------------------ presence


async def test_presence_is_true_while_a_stream_is_open_and_last_seen_is_set(
    server: LiveServer, api: Api, alice: User, bob: User, warmer: User
) -> None:
    profile = await user_json(api, bob, alice.id)
    assert profile["online"] is False
    assert profile["last_seen_at"] is None
    async with ready_stream(api, server.ws_url, alice, warmer):
        await wait_online(api, bob, alice.id, True)
        assert_utc_timestamp((await user_json(api, bob, alice.id))["last_seen_at"])
        async with ready_stream(api, server.ws_url, alice, warmer):
            await wait_online(api, bob, alice.id, True)
        assert (await user_json(api, bob, alice.id))["online"] is True  # one still open
    await wait_online(api, bob, alice.id, False)

    warm = await api.send(warmer, alice.id, "sse warm-up")
    async with open_sse(api.client, alice, after_id=warm["id"] - 1) as sse:
        await sse.message()
        await wait_online(api, bob, alice.id, True)
    await wait_online(api, bob, alice.id, False)


async def test_presence_goes_offline_when_the_client_vanishes(
    server: LiveServer, api: Api, alice: User, bob: User, warmer: User
) -> None:
    async with ready_stream(api, server.ws_url, alice, warmer) as ws:
        await wait_online(api, bob, alice.id, True)
        ws.transport.abort()  # no closing handshake: the TCP connection just goes away

        async def offline() -> bool:
            return (await user_json(api, bob, alice.id))["online"] is False

        await wait_until(offline, what="presence offline after an abort")


async def test_a_stream_without_after_id_starts_now_not_with_history(
    server: LiveServer, api: Api, alice: User, bob: User
) -> None:
    old = await api.send(bob, alice.id, "history")
    async with open_stream(server.ws_url, alice.token) as ws:
        # Online once its start position is read: what is sent from now on is after it.
        await wait_online(api, bob, alice.id, True)
        new = await api.send(bob, alice.id, "news")
        received = await next_message(ws)
    assert received == new
    assert received["id"] != old["id"]
