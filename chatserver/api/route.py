"""One way to write a route: declare what it reads as msgspec Structs, by parameter name.

    @route.get("/", errors=(404,))
    async def get_user(services: Services, caller: Caller, query: UserQuery) -> UserOut:

A route's parameters say what it needs:

- ``services``: the app's Services; ``request``: the Litestar Request (rarely needed);
- ``caller``: the authenticated Caller (401 without valid credentials). A route without
  it is public, and OpenAPI says so;
- ``path`` / ``query`` / ``headers`` / ``body``: a msgspec Struct read from the path's
  parameters (``/{user_id:int}/``; Litestar documents them from the path), the query
  string, the request headers (matched without regard to case) or the JSON body, with the rules
  attached to its fields (``Annotated[int, Meta(ge=1)]``) and in ``__post_init__``.

msgspec validates them into typed values: the query and headers with ``strict=False``
(text to numbers and booleans), the body strictly ("1" is not 1). A request that fails
gets one 400 naming every bad field. The return annotation is the answer: a Struct
(JSON, with the decorator's status code), ``None`` (204), or a Litestar ``Response``
(sent as it is, e.g. a stream). OpenAPI documents the same declarations: msgspec's JSON
Schema of each Struct, the return type, and the errors the route can answer with.

Why not Litestar's own parameters: per request, its signature model and kwargs model
cost more than a hot route's database read (see docs/architecture.md). This adapter keeps
what Litestar does once (routing, OpenAPI, error handlers) and leaves parsing and
validation to msgspec.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints
from urllib.parse import unquote_plus

import litestar
import msgspec
from litestar import Request, Response
from litestar.enums import ParamType
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIMediaType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)
from litestar.types import ASGIApp, Receive, Scope, Send

from chatserver.api import docs
from chatserver.api.deps import Caller, authenticate, header, services_of
from chatserver.errors import InvalidInput, UnsupportedMediaType
from chatserver.schemas import PATTERN_MEANINGS
from chatserver.services import Services

Handler = Callable[..., Awaitable[Any]]
Resolver = Callable[[Request[Any, Any, Any], Any], Awaitable[Any]]
STRUCT_PARAMS = ("path", "query", "headers", "body")
_encode = msgspec.json.Encoder().encode
# msgspec ends each message with the field's path ("... - at `$.page`"); the field is the key.
_AT_PATH_RE = re.compile(r" - at `\$[^`]*`$")


# ---------------------------------------------------------------- the decorators


def get(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.get, path, options)


def post(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.post, path, options)


def delete(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.delete, path, options)


def patch(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.patch, path, options)


def _route(
    decorator: type[HTTPRouteHandler], path: str, options: dict[str, Any]
) -> Callable[[Handler], HTTPRouteHandler]:
    """Litestar's ``decorator`` around an adapter that reads the handler's declarations.

    ``errors``: the statuses the route answers with beyond those its declarations imply;
    ``documents``: the type to document when the handler returns an already encoded
    equivalent of it."""
    errors: Sequence[int] = options.pop("errors", ())
    documents: type | None = options.pop("documents", None)

    def wrap(handler: Handler) -> HTTPRouteHandler:
        spec = Declaration.of(handler, documents)
        status = options.get("status_code") or (201 if decorator is litestar.post else 200)
        if spec.returns is None:
            status = options["status_code"] = 204
        handler_options: dict[str, Any] = {
            "summary": (handler.__doc__ or "").strip().splitlines()[0],
            "responses": {**spec.responses(status), **docs.for_statuses(spec.statuses(errors))},
            # Litestar calls this to build the route's Operation (it is typed as a class).
            "operation_class": spec.operation,
            **options,
        }
        return decorator(path, **handler_options)(spec.endpoint(handler, status))

    return wrap


# ---------------------------------------------------------------- the declaration


@dataclass(frozen=True, slots=True)
class Declaration:
    """What one handler reads and returns, from its signature."""

    params: tuple[str, ...]
    path: PathReader | None
    query: QueryReader | None
    headers: HeaderReader | None
    body: BodyReader | None
    returns: type | None

    @classmethod
    def of(cls, handler: Handler, documents: type | None) -> Declaration:
        hints = get_type_hints(handler)
        params = tuple(inspect.signature(handler).parameters)
        unknown = set(params) - {"services", "caller", "request", *STRUCT_PARAMS}
        if unknown:
            raise TypeError(f"{handler.__name__}: no way to provide {sorted(unknown)}")
        returns = documents or hints.get("return")
        return cls(
            params=params,
            path=PathReader(hints["path"]) if "path" in params else None,
            query=QueryReader(hints["query"]) if "query" in params else None,
            headers=HeaderReader(hints["headers"]) if "headers" in params else None,
            body=BodyReader(hints["body"]) if "body" in params else None,
            returns=None if returns in (None, type(None)) else returns,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Declaration:
        return self  # immutable; Litestar deep-copies route handlers as routers take them

    @property
    def authenticated(self) -> bool:
        return "caller" in self.params

    def statuses(self, errors: Sequence[int]) -> set[int]:
        """Every error status the route can answer with."""
        statuses = {503, *errors}
        if self.path or self.query or self.headers or self.body:
            statuses.add(400)
        if self.body:
            statuses |= {413, 415}
        if self.authenticated:
            statuses.add(401)
        return statuses

    def responses(self, status: int) -> dict[int, ResponseSpec]:
        if self.returns is None or not _is_struct(self.returns):
            return {}
        description = (self.returns.__doc__ or "").strip().split("\n")[0] or "Success"
        spec = ResponseSpec(
            data_container=self.returns, description=description, generate_examples=False
        )
        return {status: spec}

    def endpoint(self, handler: Handler, status: int) -> Callable[..., Awaitable[Any]]:
        """The function Litestar calls: it takes only the request, so Litestar parses
        nothing; the resolvers build the handler's arguments."""
        resolvers = [(name, self._resolver(name)) for name in self.params]

        async def arguments(request: Request[Any, Any, Any]) -> dict[str, Any]:
            services = services_of(request)
            return {name: await resolve(request, services) for name, resolve in resolvers}

        async def endpoint(request: Request[Any, Any, Any]) -> ASGIApp:
            return _answer(await handler(**await arguments(request)), status, request)

        async def no_content(request: Request[Any, Any, Any]) -> None:
            await handler(**await arguments(request))  # Litestar answers 204 for None

        chosen = no_content if self.returns is None else endpoint
        chosen.__name__, chosen.__doc__ = handler.__name__, handler.__doc__
        return chosen

    def _resolver(self, name: str) -> Resolver:
        if name == "services":
            return _services
        if name == "caller":
            return _caller
        if name == "request":
            return _request
        if name == "body":
            assert self.body is not None
            return self.body.read
        reader = {"path": self.path, "query": self.query, "headers": self.headers}[name]
        assert reader is not None
        return reader.read

    def operation(self, **fields: Any) -> Operation:
        """Litestar's Operation for this route, with the declared parameters and body.

        Passed to Litestar as the route's ``operation_class``: Litestar documents only what
        it parses itself, and here it parses nothing."""
        parameters = [*(self.query.parameters() if self.query else ())]
        parameters += self.headers.parameters() if self.headers else []
        fields["parameters"] = [*(fields.get("parameters") or ()), *parameters] or None
        if not self.authenticated:
            # Litestar drops an empty security list; OpenAPI needs it to say "public".
            fields["security"] = []
        if self.body is not None:
            fields["request_body"] = self.body.request_body()
        return Operation(**fields)


async def _services(_: Request[Any, Any, Any], services: Services) -> Services:
    return services


async def _caller(request: Request[Any, Any, Any], services: Services) -> Caller:
    return await authenticate(services, header(request.scope, b"authorization"))


async def _request(request: Request[Any, Any, Any], _: Services) -> Request[Any, Any, Any]:
    return request


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


# ---------------------------------------------------------------- answers


def _answer(value: Any, status: int, request: Request[Any, Any, Any]) -> ASGIApp:
    if isinstance(value, Response):
        return value.to_asgi_response(app=None, request=request)
    return JsonBody(_encode(value), status)


class JsonBody:
    """A JSON answer as a bare ASGI app (Litestar's ``Response`` builds header objects and
    checks the media type on every request, which the hot routes do not need)."""

    __slots__ = ("body", "status")

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


# ---------------------------------------------------------------- readers


class _FieldsReader:
    """Named text values (query parameters, headers) -> the Struct, converted by msgspec."""

    location: ParamType

    def __init__(self, struct: type[msgspec.Struct]) -> None:
        self.struct = struct
        self.fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}

    def convert(self, values: dict[str, Any], errors: dict[str, list[str]]) -> Any:
        if not errors:
            try:
                return msgspec.convert(values, self.struct, strict=False)
            except msgspec.ValidationError:
                pass
        raise InvalidInput({**errors, **field_errors(self.struct, values, strict=False)})

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
