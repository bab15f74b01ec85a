"""docs/deploy.md as written: its systemd unit passes ``systemd-analyze verify``, and its nginx
configuration, run by Debian's real nginx with a self-signed certificate on free ports,
carries HTTP requests, a WebSocket stream and a Server-Sent Events stream to two real
``chatserver serve`` nodes sharing PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from testinfra import procs
from testinfra.server import ServerProcess, running_server
from tests.helpers import PASSWORD
from tests.realtime_helpers import SseReader, next_message

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
NGINX = "/usr/sbin/nginx"
TIMEOUT = 10.0


def fenced(language: str) -> str:
    """The one ```language block of docs/deploy.md."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", DEPLOY.read_text(), re.S | re.M)
    assert len(blocks) == 1, f"docs/deploy.md should have one {language} block"
    return str(blocks[0])


def replace(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced, failing when the documentation no longer has it."""
    assert old in text, f"docs/deploy.md no longer contains {old!r}"
    return text.replace(old, new)


# ---------------------------------------------------------------- systemd


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    chatserver = Path(sys.executable).with_name("chatserver")
    unit = replace(fenced("ini"), "/opt/chatserver/.venv/bin/chatserver", str(chatserver))
    (tmp_path / "chatserver@.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "chatserver@8001.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chatserver@" not in result.stderr, result.stderr  # no warning about the unit


# ---------------------------------------------------------------- nginx


def nginx_site(port: int, upstreams: list[int], cert: Path, key: Path) -> str:
    """The documented site, on free local ports with the test's certificate."""
    site = fenced("nginx")
    site = replace(site, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    site = replace(site, "listen 80;", f"listen 127.0.0.1:{procs.free_port()};")
    site = replace(site, "/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert))
    site = replace(site, "/etc/letsencrypt/live/chat.example.com/privkey.pem", str(key))
    site = replace(site, "server 127.0.0.1:8001;", f"server 127.0.0.1:{upstreams[0]};")
    return replace(site, "server 127.0.0.1:8002;", f"server 127.0.0.1:{upstreams[1]};")


def nginx_main(workdir: Path, site: Path) -> str:
    """A main configuration around the site: everything nginx writes stays in workdir."""
    temp = "\n".join(
        f"{kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nuser root;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} info;\nevents {{ worker_connections 256; }}\n"
        f"http {{\naccess_log off;\n{temp}\ninclude {site};\n}}\n"
    )


def self_signed(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return cert, key


@contextlib.contextmanager
def running_nginx(workdir: Path, upstreams: list[int]) -> Iterator[int]:
    """nginx with the documented site in front of ``upstreams``; yields its TLS port."""
    port = procs.free_port()
    cert, key = self_signed(workdir)
    site = workdir / "chatserver.conf"
    site.write_text(nginx_site(port, upstreams, cert, key))
    main = workdir / "nginx.conf"
    main.write_text(nginx_main(workdir, site))
    check = subprocess.run(
        [NGINX, "-t", "-c", str(main)], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stderr
    managed = procs.spawn("nginx", [NGINX, "-c", str(main)], log_path=workdir / "nginx.log")
    try:
        wait_listening(port, managed)
        yield port
    finally:
        managed.stop()


def wait_listening(port: int, managed: procs.Managed) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        assert managed.alive(), managed.log_tail()
        assert time.monotonic() < deadline, "nginx did not listen in time"
        time.sleep(0.05)


def insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


async def signup(client: httpx.AsyncClient, name: str) -> tuple[int, str]:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    r = await client.post("/api/v1/users/", json=body)
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/auth/token/", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["user"]["id"], r.json()["token"]


@pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (apt-get install nginx)"
)
async def test_the_nginx_configuration_carries_http_websocket_and_sse_to_two_nodes(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    env = {"CHAT_DATABASE_URL": postgres_url, "CHAT_REDIS_URL": redis_url}
    with (
        running_server(tmp_path, env) as one,
        running_server(tmp_path, env) as two,
        running_nginx(tmp_path, [one.port, two.port]) as port,
    ):
        await _through_nginx(f"https://127.0.0.1:{port}", [one, two])


async def _through_nginx(base: str, nodes: list[ServerProcess]) -> None:
    async with httpx.AsyncClient(base_url=base, verify=insecure(), timeout=TIMEOUT) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.headers["x-request-id"]  # nginx's $request_id, kept by the server
        jane_id, jane = await signup(client, "jane")
        john_id, john = await signup(client, "john")
        ws_url = base.replace("https://", "wss://") + "/api/v1/stream?since=0"
        headers = {"Authorization": f"Bearer {john}", "Accept": "text/event-stream"}
        async with (
            websockets.connect(
                ws_url, additional_headers={"Authorization": f"Bearer {john}"}, ssl=insecure()
            ) as ws,
            client.stream("GET", "/api/v1/stream?since=0", headers=headers) as sse,
        ):
            assert sse.status_code == 200
            events = SseReader(sse)
            assert sse.headers["content-type"].startswith("text/event-stream")
            for n in range(4):  # least_conn spreads the sends over both nodes
                sent = await client.post(
                    "/api/v1/chats/",
                    json={"user_id": john_id, "message": f"through nginx {n}"},
                    headers={"Authorization": f"Bearer {jane}"},
                )
                assert sent.status_code == 201, sent.text
                assert (await next_message(ws, TIMEOUT))["message"] == f"through nginx {n}"
                _, message = await events.message(TIMEOUT)
                assert message["message"] == f"through nginx {n}"
    assert jane_id != john_id
    assert all(node.alive() for node in nodes)
