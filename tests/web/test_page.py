"""The page itself: what it is served with, how small it is, how fast a list of 100
conversations becomes usable, and screenshots of the main screens (light and dark, desktop
and phone) saved as test artifacts."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import expect

from chatserver.api.web import WEB_DIR
from testinfra.procs import HOST
from testinfra.server import ServerProcess
from tests.web.conftest import ARTIFACTS, DESKTOP, PHONE, ApiClient, unique

PAGE_BUDGET_BYTES = 48 * 1024  # the page's own files, gzipped


def record(name: str, value: Any) -> None:
    """A figure for the report: kept in test-artifacts/web/metrics.json."""
    path = ARTIFACTS / "web" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2) + "\n")


def test_the_page_is_served_with_a_strict_policy(server: ServerProcess) -> None:
    page = httpx.get(f"{server.base_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = {
        part.split()[0]: part.split()[1:]
        for part in page.headers["content-security-policy"].split(";")
    }
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{server.base_url}/web/js/main.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript")
    again = httpx.get(
        f"{server.base_url}/web/js/main.js",
        headers={"If-None-Match": script.headers["etag"]},
        timeout=10,
    )
    assert again.status_code == 304
    missing = httpx.get(f"{server.base_url}/web/../pyproject.toml", timeout=10)
    assert missing.status_code == 404
    assert httpx.get(f"{server.base_url}/web/nothing.js", timeout=10).status_code == 404
    # The API's own answers are untouched.
    health = httpx.get(f"{server.base_url}/healthz", timeout=10)
    assert "content-security-policy" not in health.headers
    assert "x-frame-options" not in health.headers


def test_the_page_is_small_and_loads_nothing_from_elsewhere(people: Any) -> None:
    (person,) = people(1)
    requested: list[str] = []
    person.page.on("request", lambda request: requested.append(request.url))
    person.open("/#/signup")
    expect(person.page.get_by_role("form", name="Sign up")).to_be_visible()
    person.page.wait_for_load_state("networkidle")
    away = [url for url in requested if urlsplit(url).hostname != HOST]
    assert away == []
    own = sorted({urlsplit(url).path for url in requested})
    sizes = {path: served_gzip_size(person.base_url, path) for path in own}
    total = sum(sizes.values())
    record("page_files_gzip_bytes", sizes)
    record("page_total_gzip_bytes", total)
    # Every file in the package's web directory is one the page loads (nothing dead).
    shipped = {"/web/" + p.relative_to(WEB_DIR).as_posix() for p in WEB_DIR.rglob("*.*")}
    assert shipped - {"/web/index.html"} <= set(own)
    assert total < PAGE_BUDGET_BYTES, sizes


def served_gzip_size(base_url: str, path: str) -> int:
    r = httpx.get(base_url + path, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 200, path
    assert r.headers["content-encoding"] == "gzip"
    return int(r.headers["content-length"])  # the bytes on the wire (httpx decoded them)


def test_a_list_of_100_conversations_is_interactive_quickly(people: Any, api: ApiClient) -> None:
    (reader,) = people(1)
    reader_id, reader_token = api.sign_up(reader.name)
    names = [unique("c") for _ in range(100)]
    peers = api.seed_users(names)
    for peer in peers:  # one after another: names[0]'s conversation is the oldest
        api.send(reader_token, peer, f"hello {peer}")
    reader.log_in()
    expect(reader.conversations.get_by_role("link")).to_have_count(100)

    started = time.perf_counter()
    reader.open("/")
    links = reader.conversations.get_by_role("link")
    expect(links).to_have_count(100)
    expect(links.first).to_be_enabled()
    seen_ms = (time.perf_counter() - started) * 1000
    in_page_ms = reader.page.evaluate(
        "performance.getEntriesByName('conversations-ready')[0].startTime"
    )
    record("conversations_100_interactive_ms_browser", round(in_page_ms))
    record("conversations_100_visible_ms_test", round(seen_ms))
    # Interactive: the oldest conversation opens at once from the list.
    links.last.click()
    expect(reader.page.get_by_role("heading", name=names[0], exact=True)).to_be_visible()
    expect(reader.messages).to_have_text([re.compile(f"hello {peers[0]}")])
    assert reader_id


def test_screenshots_of_the_main_screens(people: Any, api: ApiClient) -> None:
    """Light and dark, desktop and phone: sign-up, the list, a conversation."""
    ana, ben = unique("ana"), unique("ben")
    ana_id, ana_token = api.sign_up(ana)
    ben_id, ben_token = api.sign_up(ben)
    api.send(ana_token, ben_id, "Hi! Are we still on for lunch?")
    api.send(ben_token, ana_id, "Yes, 12:30 at the usual place.")
    api.send(ana_token, ben_id, "Great, see you there <3")
    shots: list[Path] = []
    for scheme in ("light", "dark"):
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            (person,) = people(1, color_scheme=scheme, viewport=viewport)
            person.open("/#/signup")
            expect(person.page.get_by_role("form", name="Sign up")).to_be_visible()
            shots.append(person.screenshot(f"signup-{scheme}-{size}"))
            person.name = ana
            person.log_in()
            expect(person.entry(ben)).to_be_visible()
            shots.append(person.screenshot(f"conversations-{scheme}-{size}"))
            person.entry(ben).click()
            expect(person.messages).to_have_count(3)
            expect(person.message("see you there")).to_contain_text("Sent")
            shots.append(person.screenshot(f"conversation-{scheme}-{size}"))
    assert all(path.stat().st_size > 1000 for path in shots)
