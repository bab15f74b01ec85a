"""Render every error as RFC 9457 ``application/problem+json``; log 5xx with the request id."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from chatserver.errors import ChatError

log = logging.getLogger("chatserver")

PROBLEM_TYPE_BASE = "https://chatserver.dev/problems/"
WWW_AUTHENTICATE = 'Bearer realm="chatserver", Basic realm="chatserver", charset="UTF-8"'

# Litestar's own errors, by status: the code and title clients see.
FRAMEWORK_TITLES = {
    400: ("invalid-input", "Invalid input"),
    401: ("not-authenticated", "Authentication required"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


class Problem(msgspec.Struct, omit_defaults=True):
    """The body of every error response (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    errors: dict[str, list[str]] | msgspec.UnsetType = msgspec.UNSET
    request_id: str | msgspec.UnsetType = msgspec.UNSET


# msgspec names a missing field only in its message, not in the error's location.
MISSING_FIELD_RE = re.compile(r"missing required field `([^`]+)`")


def problem_response(
    status: int, code: str, title: str, detail: str, **extra: Any
) -> Response[Problem]:
    headers = extra.pop("headers", None) or {}
    if status == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    body = Problem(
        type=PROBLEM_TYPE_BASE + code, title=title, status=status, detail=detail, **extra
    )
    return Response(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def handle_chat_error(_: Request[Any, Any, Any], exc: ChatError) -> Response[Problem]:
    errors = getattr(exc, "errors", msgspec.UNSET)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return problem_response(
        exc.status, exc.code, exc.title, exc.detail, errors=errors, headers=headers
    )


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    code, title = FRAMEWORK_TITLES.get(exc.status_code, ("http-error", "HTTP error"))
    if exc.status_code >= 500:
        return handle_unexpected(request, exc)
    if isinstance(exc, ValidationException):
        return _validation_problem(request, exc)
    generic = not exc.detail or exc.detail.lower() == title.lower()
    detail = _default_detail(exc.status_code) if generic else exc.detail
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    errors = {"body": [detail]} if exc.status_code == 400 else msgspec.UNSET
    return problem_response(exc.status_code, code, title, detail, headers=headers, errors=errors)


def _default_detail(status: int) -> str:
    return {
        404: "There is no such resource",
        405: "This resource does not support that method",
        413: "The request body is larger than the 64 KiB limit",
    }.get(status, "The request could not be processed")


def _validation_problem(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Problem]:
    errors: dict[str, list[str]] = {}
    for item in exc.extra if isinstance(exc.extra, list) else []:
        key = str(item.get("key") or "body") if isinstance(item, dict) else "body"
        message = str(item.get("message")) if isinstance(item, dict) else str(item)
        if missing := MISSING_FIELD_RE.search(message):
            key = missing.group(1)
        errors.setdefault(_field_name(key), []).append(message)
    fields = ", ".join(sorted(errors)) or "body"
    detail = f"Invalid value for: {fields}" if errors else str(exc.detail)
    return problem_response(400, "invalid-input", "Invalid input", detail, errors=errors or {})


def _field_name(key: str) -> str:
    # msgspec names the whole body "data"; a nested path like "$.user_id" is reduced to its field
    if key == "data":
        return "body"
    return key.removeprefix("$.").split(".", 1)[0].split("[", 1)[0] or "body"


def handle_too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Problem]:
    """msgspec gives up on absurdly nested JSON with a RecursionError: bad input, not a 500."""
    if "deserializing" not in str(exc):
        return handle_unexpected(request, exc)
    detail = "The JSON body is nested too deeply"
    return problem_response(
        400, "invalid-input", "Invalid input", detail, errors={"body": [detail]}
    )


def handle_not_utf8(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[Problem]:
    """msgspec reports invalid UTF-8 inside a JSON string this way, not as a DecodeError."""
    detail = "The request is not valid UTF-8"
    return problem_response(
        400, "invalid-input", "Invalid input", detail, errors={"body": [detail]}
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    request_id = str(request.scope.get("state", {}).get("request_id", "-"))
    log.exception(
        "unhandled error in %s %s [request %s]",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    return problem_response(
        500,
        "internal-error",
        "Internal server error",
        "The server failed to handle this request; it has been logged",
        request_id=request_id,
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ChatError: handle_chat_error,
    HTTPException: handle_http_exception,
    RecursionError: handle_too_deep,
    UnicodeDecodeError: handle_not_utf8,
    Exception: handle_unexpected,
}
