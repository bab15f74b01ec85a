"""The web client: ``/`` and its files under ``/web/``, from ``chatserver/web/`` in the package.

The files are read once, when the app is created, and kept with a gzip copy and an ETag, so a
page load costs no disk read and a revalidation answers 304. Only the files found there are
served (nothing outside that directory can be named). Every answer carries a strict
Content-Security-Policy (the app's own origin only, no inline script or style, no eval) and
refuses to be framed; the API's routes are untouched.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any, NamedTuple

from litestar import Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# connect-src 'self' covers the WebSocket to the same host and port (CSP Level 3).
WEB_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": WEB_CSP,
    "X-Frame-Options": "DENY",
    # nosniff and Referrer-Policy come with every response (middleware.SAFE_HEADERS).
    # Files keep their names across releases (no build step): revalidate, cheaply, by ETag.
    "Cache-Control": "no-cache",
    "Vary": "Accept-Encoding",
}


class WebFile(NamedTuple):
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def load_files(root: Path = WEB_DIR) -> dict[str, WebFile]:
    """Every servable file under ``root``, by its path relative to it ("js/main.js")."""
    files = {}
    for path in sorted(root.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        # mtime=0: the same bytes every start, so the gzip copy is reproducible.
        gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        files[path.relative_to(root).as_posix()] = WebFile(body, gzipped, media_type, etag)
    return files


def answer(request: Request[Any, Any, Any], file: WebFile) -> Response[bytes]:
    """The file, gzipped when the client accepts it; 304 when its ETag is current."""
    headers = {**SECURITY_HEADERS, "ETag": file.etag}
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(b"", status_code=304, headers=headers)
    body = file.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["Content-Encoding"] = file.gzipped, "gzip"
    return Response(body, media_type=file.media_type, headers=headers)


def web_router(root: Path = WEB_DIR) -> Router:
    """The routes of the web client, serving the files of ``root`` as they are now."""
    files = load_files(root)

    @get("/", sync_to_thread=False, include_in_schema=False)
    def index(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The web client's page."""
        return answer(request, files["index.html"])

    @get("/web/{name:path}", sync_to_thread=False, include_in_schema=False)
    def web_file(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        """One of the files the page loads."""
        file = files.get(name.lstrip("/"))
        if file is None:
            raise NotFoundException()
        return answer(request, file)

    return Router("/", route_handlers=[index, web_file], include_in_schema=False)
