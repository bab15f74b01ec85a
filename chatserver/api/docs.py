"""The error responses a route documents: one problem+json example per status."""

from __future__ import annotations

from collections.abc import Iterable

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

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
    429: problem("Too many attempts", 429, "Too many failed logins: try again in 60 s"),
    503: problem("Service unavailable", 503, "The database cannot be reached right now"),
}


def for_statuses(statuses: Iterable[int]) -> dict[int, ResponseSpec]:
    """The documented problem response of each status."""
    return {status: PROBLEMS[status] for status in sorted(statuses)}
