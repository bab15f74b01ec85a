"""What every action and route needs, built once per app by ``create_app``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from chatserver.auth import TokenCache
from chatserver.config import Settings
from chatserver.db import Database, now_us
from chatserver.events import Events
from chatserver.hub import Hub
from chatserver.views import MessageViews

__all__ = ["Services", "now_us"]


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    events: Events
    tokens: TokenCache
    hub: Hub
    messages: MessageViews = field(default_factory=MessageViews)
    # user id -> when this process last wrote their last_seen_at (monotonic seconds)
    last_seen_written: dict[int, float] = field(default_factory=dict)

    def last_seen_due(self, user_id: int) -> bool:
        """Whether a read should write last_seen_at now (at most once per resolution)."""
        now = time.monotonic()
        previous = self.last_seen_written.get(user_id)
        if previous is not None and now - previous < self.settings.last_seen_resolution_seconds:
            return False
        self.last_seen_written[user_id] = now
        return True
