"""Logging set-up: level from CHAT_LOG_LEVEL, format from CHAT_LOG_FORMAT.

``text``: one line per record, as before. ``json``: one JSON object per line, with
``time``, ``level``, ``logger``, ``message``, the ``request_id`` of the request being
served, and for each request one ``request`` record with ``method``, ``route`` (the
route's template: never the path's ids, never the query string), ``status``,
``duration_ms`` and ``user_id`` when the caller is known. Nothing here ever logs a
header, a body or a query string, so no password or token can reach a log.
"""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec

# The id of the request being served, for every record logged while serving it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
ACCESS = logging.getLogger("chatserver.access")
# Fields a record may carry (``extra=``) that the JSON line shows.
FIELDS = ("method", "route", "status", "duration_ms", "user_id")
# Where the ASGI servers log: in JSON mode their records go through the root handler too.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "granian", "_granian")
# The servers' own access logs write the request line, query string included: never on
# (chatserver serve turns uvicorn's off; the ``request`` records here replace it).
SERVER_ACCESS_LOGGERS = ("uvicorn.access", "granian.access")
# uvicorn's own loggers name the request's path; these are the ones that add its query.
QUERY_LOGGERS = ("uvicorn.error", "uvicorn.access", "granian.access")


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Alembic announces each of its plugins at INFO; only the migrations it runs matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if log_format == "json":
        for name in SERVER_LOGGERS:
            server_logger = logging.getLogger(name)
            server_logger.handlers.clear()
            server_logger.propagate = True
    for name in SERVER_ACCESS_LOGGERS:
        access = logging.getLogger(name)
        access.handlers.clear()
        access.propagate = False

    for name in QUERY_LOGGERS:
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


_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def access_log(scope: Any, status: int, seconds: float) -> None:
    """The request observer of JSON logging (see middleware.py): one record per request."""
    state = scope.get("state", {})
    ACCESS.info(
        "request",
        extra={
            "request_id": state.get("request_id"),
            "method": scope["method"],
            "route": scope.get("path_template") or "unmatched",
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "user_id": state.get("user_id"),
        },
    )
