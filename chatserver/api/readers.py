"""The readers ``route.py`` builds a route's arguments with: path, query, headers and body
Structs converted by msgspec (every bad field named in one 400), and their OpenAPI."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import msgspec
from litestar import Request
from litestar.enums import ParamType
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.spec import (
    Example,
    OpenAPIMediaType,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)

from chatserver.errors import InvalidInput, UnsupportedMediaType
from chatserver.schemas import PATTERN_MEANINGS
from chatserver.services import Services

# msgspec ends each message with the field's path ("... - at `$.page`"); the field is the key.
_AT_PATH_RE = re.compile(r" - at `\$[^`]*`$")


class _FieldsReader:
    """Named text values (query parameters, headers) -> the Struct, converted by msgspec."""

    location: ParamType

    def __init__(self, struct: type[msgspec.Struct]) -> None:
        self.struct = struct
        self.fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}

    def convert(self, values: dict[str, Any], errors: dict[str, list[str]]) -> Any:
        if not errors:
            try:
                converted = msgspec.convert(values, self.struct, strict=False)
            except msgspec.ValidationError:
                pass
            else:
                if not (errors := self._given_as_null(values, converted)):
                    return converted
        raise InvalidInput({**errors, **field_errors(self.struct, values, strict=False)})

    def _given_as_null(self, values: dict[str, Any], converted: Any) -> dict[str, list[str]]:
        """Parameters whose text became None (msgspec reads "null" so): leaving one out is how
        to say "none", and OpenAPI documents them without a null."""
        return {
            name: ["omit the parameter instead of giving null"]
            for name, value in values.items()
            if _null_text(value) and getattr(converted, self.fields[name].name) is None
        }

    def parameters(self) -> list[Parameter]:
        schema = msgspec.json.schema(self.struct)
        definition = schema["$defs"][self.struct.__name__]
        required = set(definition.get("required", ()))
        return [
            Parameter(
                name=name,
                param_in=self.location,
                schema=JsonSchema(schema := _without_null(prop)),
                required=name in required,
                description=schema.get("description"),
            )
            for name, prop in definition["properties"].items()
        ]


def _null_text(value: Any) -> bool:
    """Whether msgspec reads this value as null: the text "null", in any case."""
    return isinstance(value, str) and len(value) == 4 and value.lower() == "null"


class QueryReader(_FieldsReader):
    """The query string: unknown parameters are ignored; one given twice is an error (its
    meaning would be a guess)."""

    location = ParamType.QUERY

    async def read(self, request: Request[Any, Any, Any], _: Services) -> Any:
        return self.read_scope(request.scope)

    def read_scope(self, scope: Any) -> Any:
        raw: bytes = scope["query_string"]
        values: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        # surrogateescape: bytes that are not UTF-8 become lone surrogates, which the text
        # rule refuses, so a broken value gets a 400 naming it rather than a replacement.
        for name, value in _pairs(raw.decode("utf-8", "surrogateescape")):
            if name not in self.fields:
                continue
            if name in values:
                errors[name] = ["given more than once"]
            values[name] = value
        return self.convert(values, errors)


class PathReader(_FieldsReader):
    """Path parameters, as Litestar matched and converted them (``{user_id:int}``): the
    Struct adds their bounds."""

    location = ParamType.PATH

    async def read(self, request: Request[Any, Any, Any], _: Services) -> Any:
        return self.convert(request.path_params, {})


class HeaderReader(_FieldsReader):
    """Request headers, by their declared names in any case."""

    location = ParamType.HEADER

    def __init__(self, struct: type[msgspec.Struct]) -> None:
        super().__init__(struct)
        self.by_lower = {name.lower().encode(): name for name in self.fields}

    async def read(self, request: Request[Any, Any, Any], _: Services) -> Any:
        values = {
            self.by_lower[key]: value.decode("latin-1")
            for key, value in request.scope["headers"]
            if key in self.by_lower
        }
        return self.convert(values, {})


def _pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, cheaper on plain queries: only a pair
    with an escape or a plus goes through unquoting."""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name = unquote_plus(name, errors="surrogateescape")
            value = unquote_plus(value, errors="surrogateescape")
        pairs.append((name, value))
    return pairs


class BodyReader:
    """The JSON body: one strict msgspec decode; only a body that fails is looked at again,
    to name every bad field."""

    def __init__(self, struct: type[msgspec.Struct]) -> None:
        self.struct = struct
        self._decode = msgspec.json.Decoder(struct).decode

    async def read(self, request: Request[Any, Any, Any], _: Services) -> Any:
        raw = await read_body(request)
        try:
            return self._decode(raw)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            raise self._rejection(raw) from None

    def _rejection(self, raw: bytes) -> InvalidInput:
        try:
            body = msgspec.json.decode(raw)
        except RecursionError:
            return InvalidInput({"body": ["The JSON body is nested too deeply"]})
        except msgspec.DecodeError as exc:
            if fields := lone_surrogate_fields(raw):
                return InvalidInput({key: [LONE_SURROGATE] for key in fields})
            return InvalidInput({"body": [f"is not valid JSON: {exc}"]})
        if not isinstance(body, dict):
            return InvalidInput({"body": ["must be a JSON object"]})
        return InvalidInput(field_errors(self.struct, body, strict=True) or {"body": ["invalid"]})

    def request_body(self) -> RequestBody:
        """The body's schema, and an example made of its fields' first examples."""
        schema = JsonSchema.of(self.struct)
        properties = (schema.raw or {}).get("properties", {})
        value = {name: p["examples"][0] for name, p in properties.items() if p.get("examples")}
        examples: dict[str, Example | Reference] | None = (
            {"example": Example(value=value)} if value else None
        )
        media = OpenAPIMediaType(schema=schema, examples=examples)
        return RequestBody(content={"application/json": media}, required=True)


LONE_SURROGATE = "contains a lone surrogate escape (\\ud800-\\udfff unpaired): not Unicode text"
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def lone_surrogate_fields(raw: bytes) -> list[str]:
    """The top-level fields whose text holds an unpaired surrogate escape.

    msgspec refuses such a string but reports the input as truncated; Python's json module
    accepts it, which is how the field is found."""
    if b"\\u" not in raw:
        return []
    try:
        body = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(body, dict):
        return ["body"] if _has_surrogate(body) else []
    return sorted(str(key) for key, value in body.items() if _has_surrogate(value))


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE_RE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(item) for item in value)
    return False


def field_errors(
    struct: type[msgspec.Struct], values: dict[str, Any], strict: bool
) -> dict[str, list[str]]:
    """Every field of ``values`` that ``struct`` refuses, each with msgspec's reason."""
    errors: dict[str, list[str]] = {}
    for field in msgspec.structs.fields(struct):
        if field.encode_name not in values:
            if field.required:
                errors[field.encode_name] = ["this field is required"]
            continue
        try:
            msgspec.convert(values[field.encode_name], field.type, strict=strict)
        except msgspec.ValidationError as exc:
            errors[field.encode_name] = [_reason(str(exc))]
    return errors


def _reason(message: str) -> str:
    """msgspec's message without its path, and a pattern's meaning instead of the pattern."""
    for pattern, meaning in PATTERN_MEANINGS.items():
        if repr(pattern) in message:
            return meaning
    return _AT_PATH_RE.sub("", message)


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


# ---------------------------------------------------------------- OpenAPI


@dataclass(init=False)
class JsonSchema(Schema):
    """A JSON Schema from msgspec, as it is: OpenAPI 3.1 schemas are JSON Schema."""

    raw: dict[str, Any] | None = None

    def __init__(self, raw: dict[str, Any]) -> None:
        super().__init__()
        self.raw = raw

    @classmethod
    def of(cls, struct: type[msgspec.Struct]) -> JsonSchema:
        """The Struct's schema with its definitions inlined (so none is left dangling)."""
        schema = msgspec.json.schema(struct)
        return cls(_inline(schema, schema.get("$defs", {})))

    def to_schema(self) -> dict[str, Any]:
        return dict(self.raw or {})


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without its ``null`` branch: absent is how a query
    string or a header says "none"."""
    branches = [b for b in prop.get("anyOf", ()) if b != {"type": "null"}]
    if len(branches) != 1:
        return prop
    rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    return {**branches[0], **rest}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node
