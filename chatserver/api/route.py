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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints

import litestar
import msgspec
from litestar import Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Operation,
)
from litestar.types import ASGIApp, Receive, Scope, Send

from chatserver.api import docs
from chatserver.api.deps import Caller, authenticate, header, services_of
from chatserver.api.readers import BodyReader, HeaderReader, PathReader, QueryReader
from chatserver.services import Services

Handler = Callable[..., Awaitable[Any]]
Resolver = Callable[[Request[Any, Any, Any], Any], Awaitable[Any]]
STRUCT_PARAMS = ("path", "query", "headers", "body")
_encode = msgspec.json.Encoder().encode


# ---------------------------------------------------------------- the decorators


def get(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.get, path, options)


def post(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.post, path, options)


def delete(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.delete, path, options)


def put(path: str, **options: Any) -> Callable[[Handler], HTTPRouteHandler]:
    return _route(litestar.put, path, options)


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
