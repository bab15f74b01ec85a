"""What every action and route needs, built once per app by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatserver.auth import Logins, TokenCache
from chatserver.config import Settings
from chatserver.db import Database, now_us
from chatserver.events import Events
from chatserver.hub import Hub
from chatserver.lastseen import LastSeen
from chatserver.tokenuse import TokenUse
from chatserver.views import MessageCache

__all__ = ["Services", "now_us"]


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    events: Events
    tokens: TokenCache
    hub: Hub
    last_seen: LastSeen
    logins: Logins
    token_use: TokenUse
    messages: MessageCache = field(default_factory=MessageCache)
