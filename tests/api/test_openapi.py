"""/openapi.json documents every route, parameter, body and error; /docs serves the page
(rendered in a real browser by test_docs_page.py)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

Client = AsyncTestClient  # type: ignore[type-arg]


@pytest.fixture
async def openapi(client: Client) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert "json" in r.headers["content-type"]
    document: dict[str, Any] = r.json()
    return document


def operation(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    paths = document["paths"]
    found = paths.get(path) or paths.get(path.rstrip("/")) or paths.get(path.rstrip("/") + "/")
    assert found, f"{path} is missing from {sorted(paths)}"
    assert method in found, f"{method.upper()} {path} is missing"
    op: dict[str, Any] = found[method]
    return op


ROUTES = {
    ("/api/v1/users/", "post"): {"201", "400", "409", "413", "415"},
    ("/api/v1/users/", "get"): {"200", "400", "401", "404"},
    ("/api/v1/users/", "delete"): {"204", "401"},
    ("/api/v1/auth/token/", "post"): {"200", "400", "401", "413", "415", "429"},
    ("/api/v1/auth/token/", "delete"): {"204", "401"},
    ("/api/v1/chats/", "post"): {"201", "400", "401", "403", "404", "413", "415", "422"},
    ("/api/v1/blocks/", "get"): {"200", "401"},
    ("/api/v1/blocks/{user_id}", "put"): {"204", "400", "401", "404"},
    ("/api/v1/blocks/{user_id}", "delete"): {"204", "400", "401", "404"},
    ("/api/v1/conversations/{user_id}/typing", "post"): {"204", "400", "401", "404"},
    ("/api/v1/auth/tokens/", "get"): {"200", "401", "429"},
    ("/api/v1/auth/tokens/", "delete"): {"204", "401"},
    ("/api/v1/auth/tokens/{token_id}/", "delete"): {"204", "400", "401", "404"},
    ("/api/v1/chats/", "get"): {"200", "400", "401"},
    ("/healthz", "get"): {"200", "503"},
}


def test_openapi_is_version_3_1(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.1")


def test_openapi_documents_blocks_and_the_ephemeral_events(openapi: dict[str, Any]) -> None:
    listed = operation(openapi, "/api/v1/blocks/", "get")["responses"]["200"]
    schema = listed["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/BlockList")
    block_out = openapi["components"]["schemas"]["BlockOut"]
    assert set(block_out["properties"]) == {"user_id", "since"}
    description = openapi["info"]["description"]
    for text in ('{"type": "typing", "user_id"', '{"type": "presence", "user_id"', "no `pos`"):
        assert text in description
    assert '{"type": "typing", "to": <user_id>}' in description


@pytest.mark.parametrize(("path", "method"), list(ROUTES))
def test_openapi_documents_every_route_and_response(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    op = operation(openapi, path, method)
    assert set(op["responses"]) >= ROUTES[(path, method)]
    assert op.get("summary") or op.get("description")


@pytest.mark.parametrize(
    ("path", "method", "parameters"),
    [
        ("/api/v1/users/", "get", {"user_id", "username"}),
        (
            "/api/v1/chats/",
            "get",
            {"page", "page_size", "with", "unread", "before_id", "after_id", "q"},
        ),
        ("/api/v1/chats/", "post", {"Idempotency-Key"}),
    ],
)
def test_openapi_documents_the_parameters(
    openapi: dict[str, Any], path: str, method: str, parameters: set[str]
) -> None:
    names = {p["name"] for p in operation(openapi, path, method).get("parameters", [])}
    assert names >= parameters


@pytest.mark.parametrize(
    ("path", "method", "fields", "optional"),
    [
        ("/api/v1/users/", "post", ["username", "email", "password"], ["invite"]),
        ("/api/v1/auth/token/", "post", ["username", "password"], []),
        ("/api/v1/chats/", "post", ["user_id", "message"], ["reply_to"]),
        ("/api/v1/chats/{id}/", "patch", ["message"], []),
    ],
)
def test_openapi_documents_the_request_bodies(
    openapi: dict[str, Any], path: str, method: str, fields: list[str], optional: list[str]
) -> None:
    body = operation(openapi, path, method)["requestBody"]
    assert body["required"] is True
    content = body["content"]["application/json"]
    assert content["schema"]["required"] == fields
    assert set(content["schema"]["properties"]) == {*fields, *optional}
    assert content["examples"], "an example body"


@pytest.mark.parametrize(
    ("method", "statuses"),
    [("patch", {"200", "400", "401", "403", "404", "409"}), ("delete", {"204", "403", "404"})],
)
def test_openapi_documents_editing_and_deleting_messages(
    openapi: dict[str, Any], method: str, statuses: set[str]
) -> None:
    documented = operation(openapi, "/api/v1/chats/{id}/", method)
    assert set(documented["responses"]) >= statuses
    assert documented["summary"]
    description = openapi["info"]["description"]
    for event in ('"type": "edited"', '"type": "deleted"'):
        assert event in description


@pytest.mark.parametrize(
    ("path", "method", "status", "schema"),
    [
        ("/api/v1/chats/", "post", "201", "MessageOut"),
        ("/api/v1/chats/", "get", "200", "MessagePage"),
        ("/api/v1/users/", "get", "200", "UserOut"),
        ("/api/v1/auth/tokens/", "get", "200", "TokenList"),
    ],
)
def test_openapi_documents_the_success_bodies(
    openapi: dict[str, Any], path: str, method: str, status: str, schema: str
) -> None:
    content = operation(openapi, path, method)["responses"][status]["content"]
    assert content["application/json"]["schema"]["$ref"] == f"#/components/schemas/{schema}"


def test_openapi_errors_are_problem_json(openapi: dict[str, Any]) -> None:
    for (path, method), statuses in ROUTES.items():
        for status in statuses - {"200", "201", "204", "503"}:
            response = operation(openapi, path, method)["responses"][status]
            assert "application/problem+json" in response["content"], (path, method, status)


def test_openapi_carries_the_seed_examples_and_both_auth_schemes(openapi: dict[str, Any]) -> None:
    text = str(openapi)
    assert "hai 12" in text
    assert "current_page" in text
    schemes = {s["scheme"] for s in openapi["components"]["securitySchemes"].values()}
    assert {"bearer", "basic"} <= schemes


async def test_docs_serve_interactive_html(client: Client) -> None:
    r = await client.get("/docs", follow_redirects=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "openapi" in r.text.lower() or "swagger" in r.text.lower()
