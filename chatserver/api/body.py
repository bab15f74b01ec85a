"""JSON request bodies: read, checked and documented in OpenAPI from one declaration.

Measured on the send route, Litestar's body handling (its request stream, a Headers object
for the content length, a kwargs model and a signature model) plus a second decode to check
the JSON kinds cost about a sixth of the route's time. Here a valid body is one strict
msgspec decode into the Struct ("1" is not 1, true is not an integer). Only a body that
fails is decoded again, to name every bad field at once.
"""

from __future__ import annotations

import re
from typing import Any, Generic, NoReturn, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.spec import Example, OpenAPIMediaType, OpenAPIType, RequestBody, Schema

from chatserver.errors import InvalidInput, UnsupportedMediaType

S = TypeVar("S", bound=msgspec.Struct)

# msgspec names the field a ValidationError is about as "... - at `$.user_id`".
ERROR_PATH_RE = re.compile(r"at `\$\.(\w+)")
KIND_NAMES = {str: "a string", int: "an integer"}
_KINDS = {msgspec.inspect.IntType: int, msgspec.inspect.StrType: str}


class JsonInput(Generic[S]):
    """A route's JSON body: ``await read(request)`` gives the Struct or raises a 400 naming
    every bad field (413 past the app's body limit)."""

    def __init__(self, struct: type[S], example: Example) -> None:
        self.struct = struct
        self.example = example
        self._decode = msgspec.json.Decoder(struct).decode
        self._kinds = json_kinds(struct)

    async def read(self, request: Request[Any, Any, Any]) -> S:
        raw = await read_body(request)
        try:
            return self._decode(raw)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            self._reject(raw)

    def _reject(self, raw: bytes) -> NoReturn:
        try:
            body = msgspec.json.decode(raw)
        except RecursionError:
            raise InvalidInput({"body": ["The JSON body is nested too deeply"]}) from None
        except msgspec.DecodeError as exc:
            raise InvalidInput({"body": [f"is not valid JSON: {exc}"]}) from None
        check_body_kinds(body, self._kinds)
        try:
            msgspec.convert(body, self.struct)
        except msgspec.ValidationError as exc:  # a kind is right, a bound is not
            found = ERROR_PATH_RE.search(str(exc))
            raise InvalidInput({found.group(1) if found else "body": [str(exc)]}) from None
        raise InvalidInput({"body": ["could not be read"]})  # not reached: decode failed

    def request_body(self) -> RequestBody:
        """The OpenAPI request body, with the Struct's schema and the example."""
        schema = msgspec.json.schema(self.struct)
        definition = schema["$defs"][self.struct.__name__]
        return RequestBody(
            content={
                "application/json": OpenAPIMediaType(
                    schema=_openapi_schema(definition),
                    examples={"example": self.example},
                )
            },
            required=True,
        )


def json_kinds(struct: type[msgspec.Struct]) -> dict[str, type]:
    """The JSON kind (str or int) of each field of a flat Struct."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return {field.encode_name: _KINDS[type(field.type)] for field in info.fields}


def check_body_kinds(body: object, kinds: dict[str, type]) -> None:
    """Raise InvalidInput naming every field that is missing or of the wrong JSON kind."""
    if not isinstance(body, dict):
        raise InvalidInput({"body": ["must be a JSON object"]})
    errors: dict[str, list[str]] = {}
    for name, kind in kinds.items():
        if name not in body:
            errors[name] = ["this field is required"]
        elif type(body[name]) is not kind:  # exact: true/false are not integers, "1" is not 1
            errors[name] = [f"must be {KIND_NAMES[kind]}"]
    if errors:
        raise InvalidInput(errors)


async def read_body(request: Request[Any, Any, Any]) -> bytes:
    """The whole body: 415 unless it is JSON, 413 once it is known to pass the app's limit."""
    content_type, declared = _content_headers(request.scope)
    if not _is_json(content_type, declared):
        raise UnsupportedMediaType(
            "Send the request body as JSON with 'Content-Type: application/json'"
        )
    limit = request.route_handler.resolve_request_max_body_size() or float("inf")
    if declared is not None and declared > limit:
        raise RequestEntityTooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput({"body": ["the client went away before sending it whole"]})
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _content_headers(scope: Any) -> tuple[bytes, int | None]:
    """The media type (lower case, without parameters) and the declared length, if any."""
    content_type, length = b"", None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"content-length":
            length = int(value) if value.strip().isdigit() else None
    return content_type, length


def _is_json(content_type: bytes, declared_length: int | None) -> bool:
    """JSON (``application/json`` or ``…+json``); a request with no body and no media type
    is let through, and its empty body is then reported as invalid JSON."""
    if content_type:
        return content_type == b"application/json" or content_type.endswith(b"+json")
    return not declared_length


def _openapi_schema(definition: dict[str, Any]) -> Schema:
    """A flat msgspec JSON Schema (an object of integers and strings) as OpenAPI's."""
    properties = {
        name: Schema(
            type=OpenAPIType(field["type"]),
            minimum=field.get("minimum"),
            maximum=field.get("maximum"),
            min_length=field.get("minLength"),
            max_length=field.get("maxLength"),
        )
        for name, field in definition["properties"].items()
    }
    return Schema(
        type=OpenAPIType.OBJECT,
        title=definition.get("title"),
        properties=properties,  # type: ignore[arg-type]
        required=definition.get("required"),
    )
