"""Logging set-up: one line per record, level from CHAT_LOG_LEVEL."""

from __future__ import annotations

import logging
from typing import Any

# uvicorn's own loggers name the request's path; these are the ones that add its query.
SERVER_LOGGERS = ("uvicorn.error", "uvicorn.access", "granian.access")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        force=True,
    )
    # Alembic announces each of its plugins at INFO; only the migrations it runs matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropQueryStrings) for f in logger.filters):
            logger.addFilter(DropQueryStrings())


class DropQueryStrings(logging.Filter):
    """Cut the query string off every path a server logs ("WebSocket /api/v1/stream?…"):
    a query string can carry what must never reach a log (a token, by mistake)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(arg: Any) -> Any:
    if isinstance(arg, str) and arg.startswith("/") and "?" in arg:
        return arg.split("?", 1)[0]
    return arg
