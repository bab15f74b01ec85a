"""OpenAPI pieces shared by the routes: error responses and the seed's examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, Operation, Parameter, RequestBody

from chatserver.problems import Problem


def problem(description: str, status: int, detail: str) -> ResponseSpec:
    example = {
        "type": "https://chatserver.dev/problems/...",
        "title": description,
        "status": status,
        "detail": detail,
    }
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type="application/problem+json",
        generate_examples=False,
        examples=[Example(summary=description, value=example)],
    )


INVALID = problem("Invalid input", 400, "Invalid value for: user_id")
UNAUTHENTICATED = problem("Authentication required", 401, "The token is invalid or revoked")
NOT_FOUND = problem("Not found", 404, "There is no user with id 7")
CONFLICT = problem("Conflict", 409, "That username is already registered")
TOO_LARGE = problem("Request body too large", 413, "The body is larger than 64 KiB")
NOT_JSON = problem("Unsupported media type", 415, "Send the body as JSON")
KEY_REUSED = problem("Idempotency-Key reused", 422, "Key already used with another body")

UNAVAILABLE = problem("Service unavailable", 503, "The database cannot be reached right now")

# The errors each kind of route can answer with, for its OpenAPI responses.
WITH_BODY = {400: INVALID, 413: TOO_LARGE, 415: NOT_JSON, 503: UNAVAILABLE}
WITH_QUERY = {400: INVALID, 503: UNAVAILABLE}
AUTHED = {401: UNAUTHENTICATED, 503: UNAVAILABLE}
NOT_ACCEPTABLE = problem("Not acceptable", 406, "Ask for Accept: text/event-stream")


H = TypeVar("H", bound=HTTPRouteHandler)


def summarized(*handlers: H) -> list[H]:
    """Give each route its docstring's first line as OpenAPI summary (before a Router
    copies it)."""
    for handler in handlers:
        doc = (handler.fn.__doc__ or "").strip()
        if doc and not handler.summary:
            handler.summary = doc.splitlines()[0]
    return list(handlers)


def operation_class(
    *, parameters: Sequence[Parameter] = (), body: RequestBody | None = None
) -> type[Operation]:
    """An Operation class for a route decorator that documents the parameters and the body
    a route reads itself (Litestar documents only what it parses for the route)."""

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if parameters:
                self.parameters = [*(self.parameters or []), *parameters]
            if body is not None:
                self.request_body = body

    return DocumentedOperation
