"""What every action and route needs, built once per app by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatserver.auth import TokenCache
from chatserver.config import Settings
from chatserver.db import Database, now_us
from chatserver.events import Events
from chatserver.hub import Hub
from chatserver.lastseen import LastSeen
from chatserver.searchindex import SearchPurge
from chatserver.views import MessageCache

if TYPE_CHECKING:
    from chatserver.typing_relay import TypingWindow

__all__ = ["Services", "now_us"]


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    events: Events
    tokens: TokenCache
    hub: Hub
    last_seen: LastSeen
    typing: TypingWindow
    messages: MessageCache = field(default_factory=MessageCache)
    search_purge: SearchPurge | None = None

    def note_search_change(self) -> None:
        """Messages' words left the search index (see searchindex.py)."""
        if self.search_purge is not None:
            self.search_purge.note_change()
