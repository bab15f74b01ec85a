"""/api/v1/events — the stream's events for clients that poll."""

from __future__ import annotations

import msgspec

from chatserver.api import route
from chatserver.api.deps import Caller
from chatserver.metrics import DELIVERED_POLL
from chatserver.schemas import EventPage, EventsQuery
from chatserver.services import Services
from chatserver.streams import wait_for_events


class EncodedEventPage(msgspec.Struct):
    """``EventPage`` with each event spliced in as encoded."""

    events: list[msgspec.Raw]
    next: int
    reset: bool


@route.get("/api/v1/events", tags=["stream"], documents=EventPage)
async def poll_events(services: Services, caller: Caller, query: EventsQuery) -> EncodedEventPage:
    """My events after position ``since``, oldest first (the same events as the stream).

    Pass ``next`` as ``since`` next time. Without ``since``: none, and the current
    position. With ``wait``, answers as soon as there is one, or empty at the timeout.
    ``reset: true`` means ``since`` is older than what is kept: refetch, then go on from
    ``next``."""
    batch = await wait_for_events(services, caller.user_id, query.since, query.limit, query.wait)
    DELIVERED_POLL.inc(len(batch.events))
    return EncodedEventPage(
        events=[msgspec.Raw(event) for event in batch.events], next=batch.next, reset=batch.reset
    )


HANDLERS = [poll_events]
