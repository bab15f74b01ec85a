"""API bodies and responses as msgspec Structs, and the rules on their fields.

msgspec checks types and numeric ranges while decoding; ``check_*`` functions apply the
text rules and name every bad field, so the error body can say exactly what is wrong.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from email_validator import EmailNotValidError, validate_email

from chatserver.errors import InvalidInput

# The largest id either engine stores; bigger values can only be "not found" or invalid.
MAX_ID = 2**63 - 1
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]

USERNAME_RE = re.compile(r"[\w.@+-]{1,30}")
MESSAGE_MAX = 10_000
SEARCH_MAX = 200
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
EMAIL_MAX = 254
MAX_PAGE = 10**9
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
# Text PostgreSQL can store: no NUL, no lone surrogates (from bytes that are not UTF-8).
TEXT_PATTERN = r"^[^\x00\ud800-\udfff]*$"
# What a client is told when a value does not match one of these patterns.
PATTERN_MEANINGS = {
    IDEMPOTENCY_KEY_PATTERN: "must be 1–255 visible ASCII characters",
    TEXT_PATTERN: "must not contain NUL characters or invalid Unicode",
}
Cursor = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID, description="A message id")]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(micros: int | None) -> datetime | None:
    """Stored microseconds -> an aware UTC datetime (msgspec renders it with a trailing Z)."""
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


# ---------------------------------------------------------------- requests


class NewUser(msgspec.Struct):
    """Unknown fields are ignored: nobody can set their own id, date_joined or a role."""

    username: Annotated[str, msgspec.Meta(examples=["john"])]
    email: Annotated[str, msgspec.Meta(examples=["john@example.com"])]
    password: Annotated[str, msgspec.Meta(examples=["s3cret-pass"])]


class Login(msgspec.Struct):
    username: Annotated[str, msgspec.Meta(description="Username or email", examples=["john"])]
    password: Annotated[str, msgspec.Meta(examples=["s3cret-pass"])]

    def __post_init__(self) -> None:
        check_login(self)


MessageText = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MESSAGE_MAX, examples=["hai 12"])
]


class NewMessage(msgspec.Struct):
    user_id: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID, examples=[1])]
    message: MessageText
    reply_to: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1, le=MAX_ID, description="The id of a message of this conversation it answers"
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        check_message(self.message)


class MessageEdit(msgspec.Struct):
    message: MessageText

    def __post_init__(self) -> None:
        check_message(self.message)


class MessagePath(msgspec.Struct, frozen=True):
    id: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]


class SendHeaders(msgspec.Struct, frozen=True):
    idempotency_key: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="1–255 visible ASCII characters; a repeat returns the first response",
            ),
        ]
        | None
    ) = msgspec.field(default=None, name="Idempotency-Key")


class MessagesQuery(msgspec.Struct, frozen=True):
    page: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = 1
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    with_: (
        Annotated[int, msgspec.Meta(ge=1, le=MAX_ID, description="Only the conversation with them")]
        | None
    ) = msgspec.field(default=None, name="with")
    unread: Annotated[bool, msgspec.Meta(description="Only messages not fetched before")] = False
    before_id: Cursor | None = None
    after_id: Cursor | None = None
    wait: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            le=30,
            description="Long-poll: with after_id, hold up to this many seconds"
            " until a message arrives",
        ),
    ] = 0.0
    q: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=SEARCH_MAX,
                pattern=TEXT_PATTERN,
                description="Search: my messages (sent and received, not deleted) containing"
                " every word, the last one as a prefix, ignoring case; newest first",
            ),
        ]
        | None
    ) = None


class UserQuery(msgspec.Struct, frozen=True):
    user_id: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID, description="A user's id")] | None = None
    username: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=EMAIL_MAX, pattern=TEXT_PATTERN, description="Exact username, any case"
            ),
        ]
        | None
    ) = None


class DeleteMeQuery(msgspec.Struct, frozen=True):
    user_id: (
        Annotated[int, msgspec.Meta(description="Not accepted: an account can only delete itself")]
        | None
    ) = None


Position = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID, description="An event position")]


class StreamQuery(msgspec.Struct, frozen=True):
    since: (
        Annotated[
            int, msgspec.Meta(ge=0, le=MAX_ID, description="Replay every event after this position")
        ]
        | None
    ) = None
    after_id: (
        Annotated[
            int, msgspec.Meta(ge=0, le=MAX_ID, description="Replay from after this message id")
        ]
        | None
    ) = None


class ConversationsQuery(msgspec.Struct, frozen=True):
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    before: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1, le=MAX_ID, description="Only conversations whose latest message id is lower"
            ),
        ]
        | None
    ) = None


class PeerPath(msgspec.Struct, frozen=True):
    user_id: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]


class ReadMark(msgspec.Struct):
    up_to_id: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=MAX_ID,
            description="Everything they sent me up to this id is read",
            examples=[42],
        ),
    ]


class TypingFrame(msgspec.Struct, tag="typing", tag_field="type"):
    """A WebSocket client frame: I am typing to ``to`` (the same as ``POST …/typing``)."""

    to: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]


class EventsQuery(msgspec.Struct, frozen=True):
    since: (
        Annotated[int, msgspec.Meta(ge=0, le=MAX_ID, description="Events after this position")]
        | None
    ) = None
    wait: Annotated[
        float,
        msgspec.Meta(ge=0, le=30, description="Hold up to this many seconds until an event"),
    ] = 0.0
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class StreamHeaders(msgspec.Struct, frozen=True):
    last_event_id: (
        Annotated[
            int, msgspec.Meta(ge=0, le=MAX_ID, description="Resume after this position (SSE)")
        ]
        | None
    ) = msgspec.field(default=None, name="Last-Event-ID")


# ---------------------------------------------------------------- responses


class UserOut(msgspec.Struct, omit_defaults=True):
    """A user (with their email only when it is the caller)."""

    id: int
    username: str
    date_joined: datetime
    last_seen_at: datetime | None
    # True while the user has at least one open stream, on any node.
    online: bool
    # Absent (not null) unless the caller looks at themself.
    email: str | msgspec.UnsetType = msgspec.UNSET


class MessageOut(msgspec.Struct):
    """A message as stored now (a repeated Idempotency-Key returns it too)."""

    id: int
    sent_by: int
    received_by: int
    # null once deleted (a tombstone keeps its id, place, people, times and reply_to)
    message: str | None
    sent_at: datetime
    received_at: datetime | None
    edited_at: datetime | None
    deleted_at: datetime | None
    # the id of the message of this conversation it answers
    reply_to: int | None


class PageMeta(msgspec.Struct):
    count: int
    next: int | None
    current_page: str
    took: int
    previous: int | None


class MessagePage(msgspec.Struct):
    """A page of messages, in the seed's documented shape."""

    meta: PageMeta
    messages: list[MessageOut]


class ConversationOut(msgspec.Struct):
    user_id: int
    # None once that account is deleted
    user: UserOut | None
    last_message: MessageOut
    # messages from them to me above last_read_id
    unread_count: int
    # my read mark here (0 until I mark anything), and theirs
    last_read_id: int
    peer_last_read_id: int


class ConversationPage(msgspec.Struct):
    conversations: list[ConversationOut]
    # pass as ``before`` for the next page; None on the last page
    next: int | None
    # every conversation's unread_count added up
    unread_total: int


class EventPage(msgspec.Struct):
    """Events in position order (see the stream's documentation for their shapes)."""

    events: list[dict[str, object]]
    # the position to pass as ``since`` next time
    next: int
    # True when ``since`` is older than what is kept (or not reached yet): refetch
    reset: bool


class BlockOut(msgspec.Struct):
    user_id: int
    since: datetime


class BlockList(msgspec.Struct):
    """Everyone I block, the latest first."""

    blocks: list[BlockOut]


class TokenOut(msgspec.Struct):
    """A new Bearer token, and whose it is."""

    token: str
    user: UserOut


# ---------------------------------------------------------------- rules


def bad_text(value: str) -> str | None:
    """Why a string cannot be stored (PostgreSQL refuses NUL and lone surrogates), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def check_new_user(body: NewUser) -> tuple[str, str]:
    """Validate a sign-up; return the normalised (username, email) or raise InvalidInput."""
    errors: dict[str, list[str]] = {}
    if not USERNAME_RE.fullmatch(body.username):
        errors["username"] = ["1–30 characters: letters, digits and . @ + - _ only"]
    email, why = normalise_email(body.email)
    if why:
        errors["email"] = [why]
    if problem := password_problem(body.password):
        errors["password"] = [problem]
    if errors:
        raise InvalidInput(errors)
    return body.username, email


def normalise_email(raw: str) -> tuple[str, str | None]:
    if (why := bad_text(raw)) is not None:
        return raw, why
    if len(raw) > EMAIL_MAX:
        return raw, f"at most {EMAIL_MAX} characters"
    try:
        email = validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return raw, f"not a valid email address: {exc}"
    return email, None


def password_problem(password: str) -> str | None:
    if (why := bad_text(password)) is not None:
        return why
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"{PASSWORD_MIN}–{PASSWORD_MAX} characters"
    if password.isdigit():
        return "must not be entirely digits"
    return None


def check_message(text: str) -> None:
    """1–10,000 characters, not only whitespace, storable; raise InvalidInput otherwise."""
    why = bad_text(text)
    if why is None and not 1 <= len(text) <= MESSAGE_MAX:
        why = f"1–{MESSAGE_MAX} characters"
    if why is None and text.isspace():
        why = "must not be only whitespace"
    if why is not None:
        raise InvalidInput({"message": [why]})


def check_login(body: Login) -> None:
    errors = {
        field: [why]
        for field, value in (("username", body.username), ("password", body.password))
        if (why := bad_text(value)) is not None
    }
    if errors:
        raise InvalidInput(errors)
