"""The error responses a route documents: one problem+json example per status."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIHeader, OpenAPIResponse, Schema
from litestar.openapi.spec.enums import OpenAPIType

from chatserver.problems import PROBLEM_TYPE_BASE, Problem


def problem(description: str, status: int, detail: str) -> ResponseSpec:
    example = {
        "type": PROBLEM_TYPE_BASE + "...",
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


PROBLEMS = {
    400: problem("Invalid input", 400, "Invalid value for: user_id"),
    401: problem("Authentication required", 401, "The token is invalid or revoked"),
    403: problem("Forbidden", 403, "Only the sender may do that"),
    404: problem("Not found", 404, "There is no user with id 7"),
    406: problem("Not acceptable", 406, "Ask for Accept: text/event-stream"),
    409: problem("Conflict", 409, "That username is already registered"),
    413: problem("Request body too large", 413, "The body is larger than 64 KiB"),
    415: problem("Unsupported media type", 415, "Send the body as JSON"),
    422: problem("Idempotency-Key reused", 422, "Key already used with another body"),
    429: problem("Too many requests", 429, "Too many sends: retry in 2 s"),
    503: problem("Service unavailable", 503, "The database cannot be reached right now"),
}


def for_statuses(statuses: Iterable[int]) -> dict[int, ResponseSpec]:
    """The documented problem response of each status."""
    return {status: PROBLEMS[status] for status in sorted(statuses)}


def _header(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), description=description)


RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": _header("Requests allowed at once (the burst)"),
    "RateLimit-Remaining": _header("Requests left now"),
    "RateLimit-Reset": _header("Seconds until the full burst is available again"),
}
RETRY_AFTER = {"Retry-After": _header("Seconds to wait before retrying")}


def with_rate_limit_headers(responses: dict[str, Any]) -> dict[str, Any]:
    """The responses of a limited route: every one says it carries the RateLimit fields,
    and the 429 and 503 their Retry-After."""
    for status, response in responses.items():
        if isinstance(response, OpenAPIResponse):
            extra = RETRY_AFTER if status in ("429", "503") else {}
            response.headers = {**(response.headers or {}), **RATE_LIMIT_HEADERS, **extra}
    return responses
