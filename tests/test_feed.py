"""Positions (streams.py): a live event at exactly the feed's next position is sent as it
is; one at or below its cursor was already sent and is dropped; one further ahead, or the
broker's RESYNC, makes the feed read on from the database; a cursor whose events are gone
(or not reached yet) starts with one reset event. Driven on a real app and database with
the real channels plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import msgspec
import pytest

from chatserver import actions, store
from chatserver.broker import RESYNC
from chatserver.config import Settings
from chatserver.db import now_us
from chatserver.events import (
    MessageEvent,
    ReadEvent,
    ReceivedEvent,
    ResetEvent,
    pos_of,
    user_channel,
)
from chatserver.schemas import NewMessage, to_datetime
from chatserver.services import Services
from chatserver.store import MessageRow
from chatserver.streams import (
    Feed,
    StreamEvent,
    Subscription,
    read_events,
    start_position,
    subscription,
)
from chatserver.views import message_out
from tests.helpers import Api, User, concurrent_app


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[tuple[Services, Api]]:
    """The app's services and an API client, both in this test's event loop."""
    async with concurrent_app(settings) as (litestar_app, client):
        yield litestar_app.state.services, Api(client)  # type: ignore[arg-type]


def message_event(pos: int, message: MessageRow) -> bytes:
    raw = msgspec.Raw(msgspec.json.encode(message_out(message)))
    return msgspec.json.encode(MessageEvent(pos, raw))


def decoded(event: StreamEvent | bytes) -> Any:
    return msgspec.json.decode(event.payload if isinstance(event, StreamEvent) else event)


async def store_without_publishing(
    s: Services, sender: int, recipient: int, text: str
) -> MessageRow:
    """A committed message whose live event never comes (as if still on its way)."""
    async with s.db.transaction() as conn:
        message, _ = await actions._insert_message(
            conn, sender, NewMessage(user_id=recipient, message=text)
        )
    return message


def test_pos_of_reads_the_position_from_the_fixed_prefix() -> None:
    at = to_datetime(now_us())
    assert at is not None
    message = MessageRow(7, 1, 2, "hi", now_us(), None)
    payloads = {
        message_event(12, message): 12,
        msgspec.json.encode(ReceivedEvent(345, [7], 2, at)): 345,
        msgspec.json.encode(ReadEvent(6, 2, 1, 7, at)): 6,
        msgspec.json.encode(ResetEvent(9_007_199_254_740_991)): 9_007_199_254_740_991,
        b'{"type":"error","code":"x","detail":"y"}': None,
        b'{"type":"typing","user_id":3}': None,
    }
    for payload, pos in payloads.items():
        assert pos_of(payload) == pos, payload
        if pos is not None:
            assert payload.startswith(b'{"type":"'), payload
            assert decoded(payload)["pos"] == pos


async def test_a_send_gives_each_user_their_own_next_position(
    app: tuple[Services, Api],
) -> None:
    """The channel carries exactly the client's JSON (no prefix), at each user's position."""
    s, api = app
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    await api.send(carol, alice.id)  # alice's position 1
    async with (
        subscription(s.events.channels, alice.id) as on_alice,
        subscription(s.events.channels, bob.id) as on_bob,
    ):
        sent = await api.send(bob, alice.id)
        for_alice = await event_of(on_alice, sent["id"])
        for_bob = await event_of(on_bob, sent["id"])
    assert (for_alice["pos"], for_bob["pos"]) == (2, 1)
    assert for_alice == {"type": "message", "pos": 2, "message": sent}
    assert for_bob == {"type": "message", "pos": 1, "message": sent}


async def event_of(sub: Subscription, message_id: int) -> Any:
    """That message's event, decoded whole (earlier events may still be in flight)."""
    async with asyncio.timeout(5):
        while True:
            event = decoded(await sub.next_payload())
            if event.get("message", {}).get("id") == message_id:
                return event


class Live(NamedTuple):
    """Alice's feed, past its replay and its first live message (bob's), at position 1."""

    s: Services
    sub: Subscription
    feed: Feed
    first: Any  # that first message
    alice: User
    bob: User


@asynccontextmanager
async def live_feed(app: tuple[Services, Api]) -> AsyncIterator[Live]:
    s, api = app
    alice, bob = await api.signup(), await api.signup()
    async with subscription(s.events.channels, alice.id) as sub:
        feed = Feed(s, sub, alice.id, since=0)
        sent = await api.send(bob, alice.id)
        async with asyncio.timeout(5):
            first = await feed.next()
        assert (first.pos, decoded(first)["message"]) == (1, sent)
        assert feed.cursor == 1
        yield Live(s, sub, feed, sent, alice, bob)


def publish(live: Live, payload: bytes) -> None:
    live.s.events.channels.publish(payload, user_channel(live.alice.id))


async def next_event(live: Live) -> StreamEvent:
    async with asyncio.timeout(5):
        return await live.feed.next()


def unstored(live: Live, body: str) -> MessageRow:
    """A message that is in no database: the feed can only send it by trusting its position."""
    return MessageRow(live.first["id"] + 1000, live.bob.id, live.alice.id, body, now_us(), None)


async def test_an_event_at_the_next_position_is_sent_as_it_is(
    app: tuple[Services, Api],
) -> None:
    async with live_feed(app) as live:
        payload = message_event(2, unstored(live, "live"))
        publish(live, payload)
        event = await next_event(live)
        assert event == StreamEvent(payload, 2)
        assert live.feed.cursor == 2


async def test_an_event_at_or_below_the_cursor_is_dropped(
    app: tuple[Services, Api],
) -> None:
    async with live_feed(app) as live:
        publish(live, message_event(1, unstored(live, "again")))  # already sent
        publish(live, message_event(0, unstored(live, "older")))
        following = message_event(2, unstored(live, "next"))
        publish(live, following)
        assert await next_event(live) == StreamEvent(following, 2)
        assert await live.feed.poll() is None  # nothing else is due


async def test_an_event_further_ahead_makes_the_feed_read_on_from_the_database(
    app: tuple[Services, Api],
) -> None:
    async with live_feed(app) as live:
        overtaken = await store_without_publishing(live.s, live.bob.id, live.alice.id, "two")
        later = await store_without_publishing(live.s, live.bob.id, live.alice.id, "three")
        # Position 3's event overtook position 2's: the feed reads both, in order, as stored.
        publish(live, message_event(3, later._replace(body="as published")))
        events = [await next_event(live), await next_event(live)]
        assert [(e.pos, decoded(e)["message"]["id"]) for e in events] == [
            (2, overtaken.id),
            (3, later.id),
        ]
        assert decoded(events[1])["message"]["message"] == "three"
        # Position 2's event, when it comes at last, was already sent.
        publish(live, message_event(2, overtaken))
        publish(live, message_event(4, unstored(live, "four")))
        assert (await next_event(live)).pos == 4


async def test_resync_makes_the_feed_read_on_from_the_database(
    app: tuple[Services, Api],
) -> None:
    """While the broker was down nothing arrived live; its RESYNC makes the feed read."""
    async with live_feed(app) as live:
        missed = await store_without_publishing(live.s, live.bob.id, live.alice.id, "missed")
        live.sub.subscriber.put_nowait(RESYNC)
        event = await next_event(live)
        assert (event.pos, decoded(event)["message"]["id"]) == (2, missed.id)
        assert live.feed.cursor == 2


async def test_resync_with_nothing_new_sends_nothing(app: tuple[Services, Api]) -> None:
    async with live_feed(app) as live:
        live.sub.subscriber.put_nowait(RESYNC)
        assert await live.feed.poll() is None
        assert live.feed.cursor == 1


async def send_quietly(s: Services, sender: User, recipient: User, count: int) -> None:
    for n in range(count):
        await store_without_publishing(s, sender.id, recipient.id, f"m{n}")


async def first_events(s: Services, user: User, since: int, count: int) -> list[StreamEvent]:
    async with subscription(s.events.channels, user.id) as sub:
        feed = Feed(s, sub, user.id, since)
        async with asyncio.timeout(5):
            events = [await feed.next() for _ in range(count)]
        assert await feed.poll() is None
    return events


async def test_a_cursor_older_than_what_is_kept_starts_with_one_reset(
    app: tuple[Services, Api],
) -> None:
    s, api = app
    alice, bob = await api.signup(), await api.signup()
    await send_quietly(s, bob, alice, 2)
    await actions.mark_read(s, alice.id, bob.id, 10**12)  # position 3 of both
    async with s.db.transaction() as conn:  # the two read events go; messages stay
        assert await store.delete_oldest_events(conn, now_us() + 1, limit=100) == 2
    await send_quietly(s, bob, alice, 1)  # position 4 is kept
    for since in (0, 2):
        events = await first_events(s, alice, since, 1)
        assert events == [StreamEvent(b'{"type":"reset","pos":4}', 4)]
    # From the latest position gone on, nothing is missing: no reset.
    assert await first_events(s, alice, 3, 1) == [
        StreamEvent((await read_events(s, alice.id, 3, 10)).events[0], 4)
    ]


async def test_messages_outlive_the_retention_of_stored_events(
    app: tuple[Services, Api],
) -> None:
    """A user none of whose stored events went resumes from 0 with every message."""
    s, api = app
    alice, bob = await api.signup(), await api.signup()
    await send_quietly(s, bob, alice, 2)
    async with s.db.transaction() as conn:
        assert await store.delete_oldest_events(conn, now_us() + 1, limit=100) == 0
    events = await first_events(s, alice, 0, 2)
    assert [(e.pos, decoded(e)["type"]) for e in events] == [(1, "message"), (2, "message")]


async def test_a_message_deleted_with_its_recipient_leaves_its_position_out_without_reset(
    app: tuple[Services, Api],
) -> None:
    s, api = app
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    await send_quietly(s, alice, carol, 1)  # alice 1
    await send_quietly(s, alice, bob, 1)  # alice 2
    await send_quietly(s, alice, carol, 1)  # alice 3
    await actions.delete_user(s, carol.id)
    [event] = await first_events(s, alice, 0, 1)
    assert (event.pos, decoded(event)["message"]["received_by"]) == (2, bob.id)
    batch = await read_events(s, alice.id, 0, 10)
    assert (len(batch.events), batch.next, batch.reset) == (1, 3, False)
    assert (await read_events(s, alice.id, 2, 10)).next == 3  # past the gap at the end


async def test_a_cursor_beyond_the_current_position_starts_with_one_reset_then_goes_live(
    app: tuple[Services, Api],
) -> None:
    s, api = app
    alice, bob = await api.signup(), await api.signup()
    await send_quietly(s, bob, alice, 2)
    async with subscription(s.events.channels, alice.id) as sub:
        feed = Feed(s, sub, alice.id, since=50)
        async with asyncio.timeout(5):
            reset = await feed.next()
            assert reset == StreamEvent(b'{"type":"reset","pos":2}', 2)
            assert feed.cursor == 2
            sent = await api.send(bob, alice.id)
            live = await feed.next()
    assert (live.pos, decoded(live)["message"]) == (3, sent)
    batch = await read_events(s, alice.id, 50, 10)
    assert (batch.events, batch.next, batch.reset) == ([], 3, True)


async def test_a_feed_replays_every_stored_kind_after_its_cursor(
    app: tuple[Services, Api],
) -> None:
    """Messages (as they are now), received and read events, each at its position."""
    s, api = app
    alice, bob = await api.signup(), await api.signup()
    to_bob = await api.send(alice, bob.id)
    await api.inbox(bob)  # bob fetches it: alice gets a received event
    r = await api.client.post(
        f"/api/v1/conversations/{alice.id}/read", json={"up_to_id": to_bob["id"]}, headers=bob.auth
    )
    assert r.status_code == 200, r.text
    events = [decoded(e) for e in await first_events(s, alice, 0, 3)]
    assert [(e["type"], e["pos"]) for e in events] == [("message", 1), ("received", 2), ("read", 3)]
    assert events[0]["message"]["id"] == to_bob["id"]
    assert events[0]["message"]["received_at"] is not None  # its state now, not as sent
    assert (events[1]["message_ids"], events[1]["by"]) == ([to_bob["id"]], bob.id)
    assert (events[2]["by"], events[2]["of"], events[2]["up_to_id"]) == (
        bob.id,
        alice.id,
        to_bob["id"],
    )


async def test_start_position_maps_a_message_id_to_the_users_position(
    app: tuple[Services, Api],
) -> None:
    s, api = app
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    first = await api.send(bob, alice.id)  # alice 1
    elsewhere = await api.send(bob, carol.id)
    second = await api.send(alice, carol.id)  # alice 2
    assert await start_position(s, alice.id, None) == 2  # now: only what comes next
    assert await start_position(s, alice.id, 0) == 0
    assert await start_position(s, alice.id, first["id"]) == 1
    assert await start_position(s, alice.id, elsewhere["id"]) == 1
    assert await start_position(s, alice.id, second["id"]) == 2
    assert await start_position(s, carol.id, elsewhere["id"]) == 1


async def test_a_send_committed_between_the_replays_reads_is_no_gap(
    app: tuple[Services, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first replay reads the current position and the events after the cursor in two
    statements (separate snapshots on PostgreSQL): a send committing after the first of
    them, whichever it is, must not look like a gap."""
    s, api = app
    alice, bob = await api.signup(), await api.signup()
    sent: list[actions.Sent] = []

    def then_send(read: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def read_then_send(conn: Any, user_id: int, *args: Any) -> Any:
            result = await read(conn, user_id, *args)
            if user_id == alice.id and not sent:
                message = NewMessage(user_id=alice.id, message="between")
                sent.append(await actions.send_message(s, bob.id, message, None))
            return result

        return read_then_send

    for name in ("list_events", "current_event_pos"):
        monkeypatch.setattr(store, name, then_send(getattr(store, name)))
    [event] = await first_events(s, alice, 0, 1)
    assert sent
    assert decoded(event) == {
        "type": "message",
        "pos": 1,
        "message": msgspec.to_builtins(sent[0].message),
    }
