"""/healthz — is the database answering?"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Request, Response, get

from chatserver.api import docs
from chatserver.api.deps import services_of

log = logging.getLogger("chatserver")


@get("/healthz", security=[], tags=["operations"], responses={503: docs.UNAVAILABLE})
async def healthz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """200 when the database answers, 503 when it does not."""
    services = services_of(request)
    try:
        await asyncio.wait_for(services.db.ping(), timeout=2)
    except Exception as exc:  # any failure to answer is "unhealthy", never a 500
        log.warning("health check failed: %s", exc)
        return Response({"status": "unavailable", "database": "down"}, status_code=503)
    return Response({"status": "ok", "database": "up"}, status_code=200)


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document (also at /docs/openapi.json, beside the interactive docs)."""
    return request.app.openapi_schema.to_schema()


HANDLERS = docs.summarized(healthz, openapi_document)
