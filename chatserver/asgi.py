"""The ASGI entry point granian workers import: settings come from the environment."""

from __future__ import annotations

from litestar import Litestar

from chatserver.app import create_app
from chatserver.config import settings_from_env
from chatserver.logs import configure_logging


def app_from_env() -> Litestar:
    """Factory for granian (``--factory``): every worker builds its app from CHAT_* vars."""
    settings = settings_from_env()
    configure_logging(settings.log_level)
    return create_app(settings)
