"""Order hints (streams.py): a live event that says "the user's message before me is N" is
sent as it is when N is the stream's cursor, and makes the stream read the database when
it is not. Driven on a real app and database with the real channels plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

import msgspec
import pytest

from chatserver import actions
from chatserver.config import Settings
from chatserver.db import now_us
from chatserver.events import MessageEvent, user_channel
from chatserver.schemas import NewMessage
from chatserver.services import Services
from chatserver.store import MessageRow
from chatserver.streams import (
    Feed,
    StreamEvent,
    Subscription,
    message_id_of,
    split_order_hint,
    subscription,
)
from chatserver.views import message_out
from tests.helpers import Api, User, concurrent_app


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[tuple[Services, Api]]:
    """The app's services and an API client, both in this test's event loop."""
    async with concurrent_app(settings) as (litestar_app, client):
        yield litestar_app.state.services, Api(client)  # type: ignore[arg-type]


def hinted_event(previous: int, message: MessageRow) -> bytes:
    return b"%d %s" % (previous, msgspec.json.encode(MessageEvent(message_out(message))))


async def store_without_publishing(s: Services, sender: int, recipient: int) -> MessageRow:
    """A committed message whose live event never comes (as if still on its way)."""
    async with s.db.transaction() as conn:
        message, _ = await actions._insert_message(
            conn, sender, NewMessage(user_id=recipient, message="quiet"), hints=False
        )
    return message


def test_split_order_hint() -> None:
    assert split_order_hint(b'12 {"type":"message"}') == (12, b'{"type":"message"}')
    assert split_order_hint(b'{"type":"received"}') == (None, b'{"type":"received"}')


async def test_a_send_hints_each_user_with_their_previous_message(
    app: tuple[Services, Api],
) -> None:
    s, api = app
    alice, bob, carol = await api.signup(), await api.signup(), await api.signup()
    to_alice = await api.send(carol, alice.id)
    async with (
        subscription(s.events.channels, alice.id) as on_alice,
        subscription(s.events.channels, bob.id) as on_bob,
    ):
        sent = await api.send(bob, alice.id)
        hints = [await hint_of(on_alice, sent["id"]), await hint_of(on_bob, sent["id"])]
    assert hints == [to_alice["id"], 0]


async def hint_of(sub: Subscription, message_id: int) -> int | None:
    """The order hint of that message's event (earlier events may still be in flight)."""
    async with asyncio.timeout(5):
        while True:
            hint, event = await sub.next_payload()
            if message_id_of(event) == message_id:
                return hint


class Live(NamedTuple):
    """Alice's feed, past its replay and its first live message (bob's)."""

    s: Services
    feed: Feed
    cursor: int  # that first message's id: the feed's cursor
    alice: User
    bob: User


@asynccontextmanager
async def live_feed(app: tuple[Services, Api]) -> AsyncIterator[Live]:
    s, api = app
    alice, bob = await api.signup(), await api.signup()
    async with subscription(s.events.channels, alice.id) as sub:
        feed = Feed(s, sub, alice.id, after_id=None, since=now_us())
        sent = await api.send(bob, alice.id)
        async with asyncio.timeout(5):
            assert (await feed.next()).message_id == sent["id"]
        yield Live(s, feed, sent["id"], alice, bob)


async def publish_then_next(live: Live, payload: bytes) -> StreamEvent:
    live.s.events.channels.publish(payload, user_channel(live.alice.id))
    async with asyncio.timeout(5):
        return await live.feed.next()


async def test_an_event_following_the_cursor_is_sent_without_reading(
    app: tuple[Services, Api],
) -> None:
    async with live_feed(app) as live:
        # Never stored: the feed can only send it by trusting the hint, not by reading.
        unstored = MessageRow(
            live.cursor + 1000, live.bob.id, live.alice.id, "live", now_us(), None
        )
        event = await publish_then_next(live, hinted_event(live.cursor, unstored))
    assert event.message_id == unstored.id


async def test_an_event_after_a_gap_makes_the_feed_read_the_database(
    app: tuple[Services, Api],
) -> None:
    async with live_feed(app) as live:
        overtaken = await store_without_publishing(live.s, live.bob.id, live.alice.id)
        later = overtaken._replace(id=overtaken.id + 1000, body="later")
        event = await publish_then_next(live, hinted_event(overtaken.id, later))
    assert event.message_id == overtaken.id  # read from the database, in id order
