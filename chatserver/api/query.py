"""Query parameters of the busiest routes, parsed here and documented in OpenAPI from the
same declarations.

Measured on the inbox route, Litestar's per-request parameter handling (a signature model
over seven query parameters) cost more than the route's database read. These routes take
only the request; ``Query.parse`` reads the raw query string in one pass, checks every value
against its declaration, and reports every bad one at once (400, naming each). Unknown
parameters are ignored, as before; a parameter given twice is an error, as its meaning would
be a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from litestar.enums import ParamType
from litestar.openapi.spec import OpenAPIType, Parameter, Schema

from chatserver.errors import InvalidInput
from chatserver.schemas import bad_text

INT_RE = re.compile(r"[+-]?[0-9]{1,40}")
TRUE, FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter: how to read it, its bounds and default, and its documentation."""

    name: str
    kind: OpenAPIType
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    description: str | None = None

    def convert(self, raw: str) -> Any:
        """The value of ``raw``; raises ValueError with the message a client sees."""
        value = _READERS[self.kind](raw)
        low, high = self.minimum, self.maximum
        if low is not None and value < low:
            raise ValueError(f"must be at least {_number(low)}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {_number(high)}")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters")
        return value

    def openapi(self) -> Parameter:
        schema = Schema(
            type=self.kind,
            minimum=self.minimum,
            maximum=self.maximum,
            max_length=self.max_length,
            default=self.default,
        )
        return Parameter(
            name=self.name, param_in=ParamType.QUERY, schema=schema, description=self.description
        )


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)  # 30.0 -> "30"


def _read_int(raw: str) -> int:
    if not INT_RE.fullmatch(raw):
        raise ValueError("must be a whole number")
    return int(raw)


def _read_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _read_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in TRUE or lowered in FALSE:
        return lowered in TRUE
    raise ValueError("must be true or false")


def _read_str(raw: str) -> str:
    if (why := bad_text(raw)) is not None:
        raise ValueError(why)
    return raw


_READERS: dict[OpenAPIType, Callable[[str], Any]] = {
    OpenAPIType.INTEGER: _read_int,
    OpenAPIType.NUMBER: _read_float,
    OpenAPIType.BOOLEAN: _read_bool,
    OpenAPIType.STRING: _read_str,
}


def _pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, a third of its cost on plain queries
    (only a pair with an escape or a plus goes through unquoting)."""
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


class Query:
    """A route's query parameters: ``parse(scope)`` gives a dict of name -> value."""

    def __init__(self, *params: Param) -> None:
        self.params = {p.name: p for p in params}
        self.defaults = {p.name: p.default for p in params}

    def parse(self, scope: Any) -> dict[str, Any]:
        raw = scope["query_string"]
        if not raw:
            return dict(self.defaults)
        values, errors = dict(self.defaults), {}
        seen: set[str] = set()
        # surrogateescape: bytes that are not UTF-8 become lone surrogates, which no reader
        # accepts, so a broken value gets a 400 naming it rather than a silent replacement.
        text_query = raw.decode("utf-8", "surrogateescape")
        for name, text in _pairs(text_query):
            if (param := self.params.get(name)) is None:
                continue
            if name in seen:
                errors[name] = ["given more than once"]
                continue
            seen.add(name)
            try:
                values[name] = param.convert(text)
            except ValueError as exc:
                errors[name] = [str(exc)]
        if errors:
            raise InvalidInput(errors)
        return values

    def openapi(self) -> list[Parameter]:
        """The parameters for OpenAPI (see ``docs.operation_class``)."""
        return [p.openapi() for p in self.params.values()]
