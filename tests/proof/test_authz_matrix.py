"""Authorization matrix, generated from the server's own OpenAPI document.

For every operation and every integer it takes (path segment, query parameter, header, JSON
body field), user A sends other users' ids (B's, C's, their messages', a deleted user's),
negative, zero, huge and non-numeric values. Never a 5xx, never an undocumented status, never
a byte of another user's private data (B's email, the texts B and C exchanged, B's token), and
nobody's data changes but A's own. A new route is covered by being in the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from testinfra.server import ServerProcess
from tests.proof.conftest import bearer, login, new_name, signup

HOSTILE_LITERALS: list[Any] = [-1, 0, 2**63, 2**64 + 1, 10**30, "abc", "1.5", "0x10", "", "+7"]
# Any path answers these besides what its operation documents (see the API description).
ALWAYS_POSSIBLE = {404, 405}
SAFE_HEADERS = {"Accept": "application/json"}


@dataclass
class Cast:
    a_token: str
    a_id: int
    b: dict[str, Any]
    private: list[str]  # what A must never see
    other_ids: list[int]  # B's, C's, their messages' and tokens', the deleted user's and theirs
    # A may revoke its own tokens (its right, not a leak): those ids are not tried as token ids
    own_token_ids: set[int]


@dataclass
class Probe:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    body: dict[str, Any] | None
    documented: set[int]
    label: str


def setup_cast(client: httpx.Client) -> Cast:
    names = {who: new_name(who) for who in ("a", "b", "c", "d")}
    ids = {who: signup(client, name) for who, name in names.items()}
    tokens = {who: login(client, name) for who, name in names.items()}
    secrets = [
        f"private B to C {names['b']}",
        f"private C to B {names['c']}",
        f"D to B {names['d']}",
    ]
    sent = []
    for (frm, to), text in zip((("b", "c"), ("c", "b"), ("d", "b")), secrets, strict=True):
        r = client.post(
            "/api/v1/chats/",
            json={"user_id": ids[to], "message": text},
            headers=bearer(tokens[frm]),
        )
        assert r.status_code == 201, r.text
        sent.append(r.json()["id"])
    assert client.delete("/api/v1/users/", headers=bearer(tokens["d"])).status_code == 204
    b = client.get("/api/v1/users/", headers=bearer(tokens["b"])).json()
    token_ids = {who: _token_ids(client, tokens[who]) for who in ("a", "b", "c")}
    return Cast(
        a_token=tokens["a"],
        a_id=ids["a"],
        b=b,
        private=[*secrets, b["email"], tokens["b"], tokens["c"]],
        other_ids=[ids["b"], ids["c"], ids["d"], *sent, *token_ids["b"], *token_ids["c"]],
        own_token_ids=token_ids["a"],
    )


def _token_ids(client: httpx.Client, token: str) -> set[int]:
    r = client.get("/api/v1/auth/tokens/", headers=bearer(token))
    assert r.status_code == 200, r.text
    return {t["id"] for t in r.json()["tokens"]}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "delete", "patch", "put"):
                yield method.upper(), path, operation


def body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = (operation.get("requestBody") or {}).get("content", {})
    schema: dict[str, Any] | None = content.get("application/json", {}).get("schema")
    return schema


def is_integer(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "integer"


def base_body(schema: dict[str, Any], own_id: int) -> dict[str, Any]:
    """A valid body: integers are the caller's own id, text its example (or plain text)."""
    body = {}
    for name, prop in schema.get("properties", {}).items():
        if name not in schema.get("required", ()):
            continue
        body[name] = own_id if is_integer(prop) else (prop.get("examples") or ["hello there"])[0]
    return body


def probes(document: dict[str, Any], cast: Cast) -> Iterator[Probe]:
    """One request per operation, integer input and hostile value; the other inputs benign."""
    for method, path, operation in operations(document):
        documented = {int(s) for s in operation.get("responses", {})} | ALWAYS_POSSIBLE
        parameters = operation.get("parameters") or []
        schema = body_schema(operation)
        targets = [(p["in"], p["name"]) for p in parameters if is_integer(p.get("schema", {}))]
        if schema is not None:
            targets += [
                ("body", n) for n, p in schema.get("properties", {}).items() if is_integer(p)
            ]
        own_path = {p["name"]: cast.a_id for p in parameters if p["in"] == "path"}
        for where, name in targets:
            for value in [*cast.other_ids, *HOSTILE_LITERALS]:
                if name == "token_id" and value in cast.own_token_ids:
                    continue
                values = {**own_path, name: value} if where == "path" else own_path
                body = None if schema is None else base_body(schema, cast.a_id)
                if where == "body" and body is not None:
                    body[name] = value
                yield Probe(
                    method=method,
                    path=re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path),  # noqa: B023
                    params={name: value} if where == "query" else {},
                    headers={name: str(value)} if where == "header" else {},
                    body=body,
                    documented=documented,
                    label=f"{method} {path} {where}:{name}={value!r}",
                )


def send(client: httpx.Client, probe: Probe, token: str) -> httpx.Response:
    return client.request(
        probe.method,
        probe.path,
        params=probe.params,
        headers={**SAFE_HEADERS, **bearer(token), **probe.headers},
        json=probe.body,
    )


def test_nobody_reaches_another_users_data(proof_server: ServerProcess) -> None:
    with httpx.Client(base_url=proof_server.base_url, timeout=30) as client:
        cast = setup_cast(client)
        document = client.get("/openapi.json").json()
        b_before = client.get(
            "/api/v1/users/", params={"user_id": cast.b["id"]}, headers=bearer(cast.a_token)
        ).json()
        tried, problems = 0, []
        for probe in probes(document, cast):
            r = send(client, probe, cast.a_token)
            tried += 1
            if r.status_code >= 500 or r.status_code not in probe.documented:
                problems.append(f"{probe.label}: {r.status_code} {r.text[:200]}")
            problems += [f"{probe.label}: leaks {s[:12]}…" for s in cast.private if s in r.text]
        assert tried > 50, "the document offered almost nothing to try"
        assert not problems, "\n".join(problems)
        # Nothing of B's changed, and A is still A (no hostile value acted on anyone).
        after = client.get(
            "/api/v1/users/", params={"user_id": cast.b["id"]}, headers=bearer(cast.a_token)
        )
        assert after.status_code == 200
        assert {k: after.json()[k] for k in ("id", "username")} == {
            k: b_before[k] for k in ("id", "username")
        }
        me = client.get("/api/v1/users/", headers=bearer(cast.a_token))
        assert me.status_code == 200
        assert me.json()["id"] == cast.a_id
