"""OpenAPI pieces shared by the routes: error responses and the seed's examples."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

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

COMMON = {400: INVALID, 413: TOO_LARGE, 415: NOT_JSON}
AUTHED = {**COMMON, 401: UNAUTHENTICATED}
NOT_ACCEPTABLE = problem("Not acceptable", 406, "Ask for Accept: text/event-stream")
