"""The OpenAPI document's configuration and the interactive docs at ``/docs``, served offline.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package (an unmodified Swagger UI
release) and are served by the app itself: Litestar's own Swagger plugin loads them from a CDN,
which renders a blank page wherever the browser has no internet. The page has no inline script
or style, so its Content-Security-Policy allows the app's own origin only.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from litestar import Request, Router, get
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath
from litestar.response import File
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed

DOCS_PATH = "/docs"
ASSET_ROUTE = "docs-asset"
STATIC = Path(__file__).resolve().parent.parent / "static"

# Only what the page loads; the bundle's other files (its demo page, source maps) stay private.
ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui.css": (Path(swagger_ui_path) / "swagger-ui.css", "text/css"),
    "swagger-ui-bundle.js": (Path(swagger_ui_path) / "swagger-ui-bundle.js", "text/javascript"),
    "favicon-32x32.png": (Path(swagger_ui_path) / "favicon-32x32.png", "image/png"),
    "swagger-init.js": (STATIC / "swagger-init.js", "text/javascript"),
}

# Swagger UI's stylesheet draws its icons from data: URIs; everything else is this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{favicon}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{spec}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


class OfflineSwaggerPlugin(OpenAPIRenderPlugin):
    """Swagger UI from the app's own origin, started by a served script."""

    def __init__(self) -> None:
        super().__init__(path="/", media_type=MediaType.HTML)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        def asset(name: str) -> str:
            return html.escape(request.app.route_reverse(ASSET_ROUTE, file=name))

        return PAGE.format(
            title=html.escape(str(openapi_schema["info"]["title"])),
            favicon=asset("favicon-32x32.png"),
            css=asset("swagger-ui.css"),
            spec=html.escape(self.get_openapi_json_route(request)),
            bundle=asset("swagger-ui-bundle.js"),
            init=asset("swagger-init.js"),
        ).encode()

    def receive_router(self, router: Router) -> None:
        router.register(docs_asset)


@get(
    "/assets/{file:str}",
    name=ASSET_ROUTE,
    sync_to_thread=False,
    cache_control=CacheControlHeader(max_age=3600),
)
def docs_asset(file: FromPath[str]) -> File:
    """One of the files the docs page loads."""
    if file not in ASSETS:
        raise NotFoundException()
    path, media_type = ASSETS[file]
    return File(path, filename=file, media_type=media_type, content_disposition_type="inline")


API_DESCRIPTION = """A direct-message chat server.

**Errors** are RFC 9457 `application/problem+json`: `type`, `title`, `status`, `detail`, and
for invalid fields `errors: {field: [message, …]}`. Besides the responses listed per route,
any path answers 404 when it does not exist and 405 for a method it does not support; every
response carries `X-Request-ID`.

**Messages** carry `edited_at` (null until edited), `deleted_at` (null unless deleted) and
`reply_to` (the id of the message of the same conversation they answer, or null). Only the
sender edits (`PATCH /api/v1/chats/{id}/`) or deletes (`DELETE /api/v1/chats/{id}/`) a
message: its recipient gets 403, anyone else 404. `GET /api/v1/chats/?q=` searches.

**Authentication**: `Authorization: Bearer <token>` (from `POST /api/v1/auth/token/`) or
`Authorization: Basic <base64 username:password>`; failures answer 401 with
`WWW-Authenticate`.

**Events** — every event you can receive carries `pos`, your position: it increases
strictly (by one) for you, in the order things happened for you.
`{"type": "message", "pos": …, "message": {…}}` for every message to or from you (a replay
shows its current state); `{"type": "received", "pos": …, "message_ids": […], "by": <user
id>, "at": "…"}` when the recipient's client fetched your messages (delivered);
`{"type": "read", "pos": …, "by": <reader>, "of": <whose messages>, "up_to_id": …, "at":
"…"}` to both users when a read mark moves; `{"type": "edited", "pos": …, "message": {…}}`
to both users when a message is edited (a replay shows its current state);
`{"type": "deleted", "pos": …, "message_id": <id>, "at": "…"}` to both users when a message
is deleted (it stays as a tombstone: `message` null, `deleted_at` set);
`{"type": "reset", "pos": <current>}` when the position you resume from is older than what
is kept (`CHAT_EVENT_RETENTION_DAYS`) — refetch then. `{"type": "error", …}` has no position.

**Ephemeral events** have no `pos`: they are never stored, never replayed (not by `since`,
not by `GET /api/v1/events`), and only streams open at the time get them.
`{"type": "typing", "user_id": <who>}` when someone you have a conversation with is typing
to you (at most one per pair every 2 s; treat it as expiring after 5 s unless repeated);
`{"type": "presence", "user_id": …, "online": true|false, "last_seen_at": "…"|null}` when
someone you have a conversation with opens their first stream, or closes their last one
(after a grace period, `CHAT_PRESENCE_GRACE_SECONDS`, so a reconnect does not flicker).
Someone who blocks you sends you neither, and shows `online` false and `last_seen_at`
null (`/api/v1/blocks/`).

**Live stream** — `GET /api/v1/stream`, as WebSocket or Server-Sent Events
(`Accept: text/event-stream`). `?since=<pos>` replays every event after that position,
oldest first, then goes live (no gap, no duplicate); `?after_id=<message id>` resumes after
a message; with neither the stream starts now. SSE `id:` is the position, so
`Last-Event-ID` resumes by position. WebSocket: authenticate with the Bearer header or a
first text frame `{"type": "auth", "token": "…", "since": 0}` within 5 s (else close code
4401). A client frame `{"type": "typing", "to": <user_id>}` is the same as `POST
/api/v1/conversations/{user_id}/typing` (its errors come back as error events); other
client frames get an error event; frames over 64 KiB close with 1009; a client
too slow to read is closed with 1013 and resumes with `since`; revoking the token or
deleting the user closes with 4401; a server error closes with 1011 (resume with `since`).
If Redis goes away, streams catch up by themselves once it is back. `GET /api/v1/events`
serves the same events to clients that poll.
"""


def openapi_config() -> OpenAPIConfig:
    """A new config for each app: the docs router it carries is registered into one app."""
    schemes: dict[str, Any] = {
        "bearer": SecurityScheme(
            type="http", scheme="bearer", description="A token from POST /api/v1/auth/token/"
        ),
        "basic": SecurityScheme(type="http", scheme="basic", description="username:password"),
    }
    docs_router = Router(
        DOCS_PATH,
        route_handlers=[],
        include_in_schema=False,
        response_headers=[ResponseHeader(name="Content-Security-Policy", value=DOCS_CSP)],
    )
    return OpenAPIConfig(
        title="chatserver",
        version="1.0.0",
        description=API_DESCRIPTION,
        path=DOCS_PATH,
        openapi_router=docs_router,
        render_plugins=[OfflineSwaggerPlugin()],
        components=Components(security_schemes=schemes),
        security=[{"bearer": []}, {"basic": []}],
        use_handler_docstrings=True,
    )
