"""One error hierarchy; ``problems.py`` renders every error as RFC 9457 problem+json.

Nothing here knows HTTP beyond the status number each error maps to.
"""

from __future__ import annotations


class ChatError(Exception):
    """Base of every error the API reports on purpose."""

    status = 500
    code = "internal-error"
    title = "Internal server error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class InvalidInput(ChatError):
    status = 400
    code = "invalid-input"
    title = "Invalid input"

    def __init__(self, errors: dict[str, list[str]], detail: str | None = None) -> None:
        fields = ", ".join(sorted(errors))
        super().__init__(detail or f"Invalid value for: {fields}")
        self.errors = errors


class NotAuthenticated(ChatError):
    status = 401
    code = "not-authenticated"
    title = "Authentication required"


class BadCredentials(NotAuthenticated):
    code = "bad-credentials"
    title = "Invalid username or password"


class UnsupportedMediaType(ChatError):
    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class NotAcceptable(ChatError):
    status = 406
    code = "not-acceptable"
    title = "Not acceptable"


class Forbidden(ChatError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ChatError):
    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(ChatError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Unavailable(ChatError):
    """The database cannot be reached right now; the request changed nothing, retry later."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"


class IdempotencyMismatch(ChatError):
    status = 422
    code = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"
